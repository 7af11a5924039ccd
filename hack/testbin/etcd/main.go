// Command etcd is upstream etcd's server, built from the Go module proxy.
//
// etcd's own go.mod replaces its sibling modules with relative paths, so `go install` of it is refused;
// this wrapper module requires the tagged server module instead (see hack/testbin.sh).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
