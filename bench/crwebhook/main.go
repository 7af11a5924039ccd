// Command crwebhook is the benchmark's Go peer: a controller-runtime admission webhook (webhook.Server with
// TLS, admission.Webhook, a typed Pod decode) doing the same GCS FT injection as ray-ft-webhook for the
// cases the benchmark sends. It is a peer to compare with, not a second implementation: the rules are
// ray-ft-webhook's (see its README), reduced to the common cases, and bench/run.py checks that every
// patched pod it answers equals ray-ft-webhook's.
//
// RayClusters are read once from a folder of JSON manifests (the same folder given to ray-ft-webhook's
// --rayclusters-from), like a warm informer cache.
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/go-logr/logr"
	"gomodules.xyz/jsonpatch/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager/signals"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

const (
	annFT          = "ray.io/ft-enabled"
	annStorageNS   = "ray.io/external-storage-namespace"
	annInject      = "ray-ft-webhook.io/inject"
	annAddress     = "ray-ft-webhook.io/redis-address"
	annPassword    = "ray-ft-webhook.io/redis-password-secret"
	annWorkerTO    = "ray-ft-webhook.io/worker-reconnect-timeout-s"
	annHeadTO      = "ray-ft-webhook.io/head-reconnect-timeout-s"
	annInjected    = "ray-ft-webhook.io/injected"
	envStorageNS   = "RAY_external_storage_namespace"
	envAddress     = "RAY_REDIS_ADDRESS"
	envPassword    = "REDIS_PASSWORD"
	envTimeout     = "RAY_gcs_rpc_server_reconnect_timeout_s"
	envGenCmd      = "KUBERAY_GEN_RAY_START_CMD"
	flagPassword   = "--redis-password=$REDIS_PASSWORD"
	flagPasswordNm = "--redis-password"
)

var (
	rayStart    = regexp.MustCompile(`\bray\s+start\b(\s+--head\b)?`)
	hasPassword = regexp.MustCompile(`(?:^|\s)` + regexp.QuoteMeta(flagPasswordNm) + `(?:=|\s|$)`)
)

// rayCluster is what the injection needs from one RayCluster, resolved once at load time.
type rayCluster struct {
	UID       string
	FT        bool
	StorageNS string
	Address   string
	Password  *corev1.EnvVarSource
	WorkerTO  int
	HeadTO    int
}

type defaults struct {
	address        string
	passwordSecret string
	workerTO       int
}

func secretRef(ref string) *corev1.EnvVarSource {
	name, key, found := strings.Cut(ref, "/")
	if !found {
		key = "password"
	}
	return &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: name}, Key: key}}
}

func parseCluster(raw []byte, d defaults) (string, *rayCluster, error) {
	var obj struct {
		Metadata struct {
			Name        string            `json:"name"`
			Namespace   string            `json:"namespace"`
			UID         string            `json:"uid"`
			Annotations map[string]string `json:"annotations"`
		} `json:"metadata"`
		Spec struct {
			Options *struct {
				RedisAddress             string `json:"redisAddress"`
				ExternalStorageNamespace string `json:"externalStorageNamespace"`
				RedisPassword            *struct {
					ValueFrom *corev1.EnvVarSource `json:"valueFrom"`
				} `json:"redisPassword"`
			} `json:"gcsFaultToleranceOptions"`
		} `json:"spec"`
	}
	if err := json.Unmarshal(raw, &obj); err != nil {
		return "", nil, err
	}
	m, opts := obj.Metadata, obj.Spec.Options
	if m.Namespace == "" {
		m.Namespace = "default"
	}
	c := &rayCluster{UID: m.UID, WorkerTO: d.workerTO, StorageNS: m.UID, Address: d.address}
	c.FT = (strings.EqualFold(m.Annotations[annFT], "true") || opts != nil) &&
		!strings.EqualFold(m.Annotations[annInject], "false")
	if ns, ok := m.Annotations[annStorageNS]; ok {
		c.StorageNS = ns
	}
	if d.passwordSecret != "" {
		c.Password = secretRef(d.passwordSecret)
	}
	if v := m.Annotations[annAddress]; v != "" {
		c.Address = v
	}
	if v := m.Annotations[annPassword]; v != "" {
		c.Password = secretRef(v)
	}
	if v, err := strconv.Atoi(m.Annotations[annWorkerTO]); err == nil && v > 0 {
		c.WorkerTO = v
	}
	if v, err := strconv.Atoi(m.Annotations[annHeadTO]); err == nil && v > 0 {
		c.HeadTO = v
	}
	if opts != nil {
		if opts.ExternalStorageNamespace != "" {
			c.StorageNS = opts.ExternalStorageNamespace
		}
		if opts.RedisAddress != "" {
			c.Address = opts.RedisAddress
		}
		if opts.RedisPassword != nil && opts.RedisPassword.ValueFrom != nil {
			c.Password = opts.RedisPassword.ValueFrom
		}
	}
	return m.Namespace + "/" + m.Name, c, nil
}

func loadClusters(dir string, d defaults) (map[string]*rayCluster, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, err
	}
	clusters := map[string]*rayCluster{}
	for _, p := range paths {
		raw, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		key, c, err := parseCluster(raw, d)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		clusters[key] = c
	}
	return clusters, nil
}

type injector struct {
	decoder  admission.Decoder
	clusters map[string]*rayCluster
}

func escape(key string) string {
	return strings.ReplaceAll(strings.ReplaceAll(key, "~", "~0"), "/", "~1")
}

func addFlag(cmd string) string {
	loc := rayStart.FindStringIndex(cmd)
	if loc == nil || hasPassword.MatchString(cmd) {
		return cmd
	}
	return cmd[:loc[1]] + " " + flagPassword + cmd[loc[1]:]
}

func (h *injector) owner(pod *corev1.Pod, namespace string) (string, string, bool) {
	for _, ref := range pod.OwnerReferences {
		if ref.Kind == "RayCluster" && ref.Controller != nil && *ref.Controller &&
			(ref.APIVersion == "ray.io/v1" || ref.APIVersion == "ray.io/v1alpha1") {
			return namespace + "/" + ref.Name, string(ref.UID), true
		}
	}
	if name := pod.Labels["ray.io/cluster"]; name != "" {
		return namespace + "/" + name, "", true
	}
	return "", "", false
}

// Handle answers one AdmissionReview: explicit add/replace ops, like ray-ft-webhook's patch builder.
func (h *injector) Handle(_ context.Context, req admission.Request) admission.Response {
	if req.Operation != "CREATE" || req.Kind.Group != "" || req.Kind.Kind != "Pod" {
		return admission.Allowed("")
	}
	pod := &corev1.Pod{}
	if err := h.decoder.Decode(req, pod); err != nil {
		return admission.Errored(http.StatusBadRequest, err)
	}
	role := pod.Labels["ray.io/node-type"]
	if role != "head" && role != "worker" {
		return admission.Allowed("")
	}
	namespace := req.Namespace
	if namespace == "" {
		namespace = pod.Namespace
	}
	key, uid, ok := h.owner(pod, namespace)
	if !ok {
		return admission.Allowed("")
	}
	c := h.clusters[key]
	if c == nil || (uid != "" && c.UID != "" && uid != c.UID) {
		return admission.Denied("ray-ft-webhook: RayCluster " + key + " not found")
	}
	if !c.FT || len(pod.Spec.Containers) == 0 {
		return admission.Allowed("")
	}
	container := pod.Spec.Containers[0]
	present := map[string]bool{}
	genIndex := -1
	for i, e := range container.Env {
		present[e.Name] = true
		if e.Name == envGenCmd && e.ValueFrom == nil {
			genIndex = i
		}
	}
	var annotations [][2]string
	var env []corev1.EnvVar
	var names []string
	addEnv := func(e corev1.EnvVar) {
		if !present[e.Name] {
			env = append(env, e)
			names = append(names, e.Name)
		}
	}
	if role == "head" {
		if _, ok := pod.Annotations[annFT]; !ok {
			annotations = append(annotations, [2]string{annFT, "true"})
		}
		if _, ok := pod.Annotations[annStorageNS]; !ok {
			annotations = append(annotations, [2]string{annStorageNS, c.StorageNS})
		}
		addEnv(corev1.EnvVar{Name: envStorageNS, Value: c.StorageNS})
		if c.Address != "" {
			addEnv(corev1.EnvVar{Name: envAddress, Value: c.Address})
		}
		if c.Password != nil {
			addEnv(corev1.EnvVar{Name: envPassword, ValueFrom: c.Password})
		}
		if c.HeadTO > 0 {
			addEnv(corev1.EnvVar{Name: envTimeout, Value: strconv.Itoa(c.HeadTO)})
		}
	} else {
		addEnv(corev1.EnvVar{Name: envTimeout, Value: strconv.Itoa(c.WorkerTO)})
	}
	var args0, gen string
	if len(container.Args) > 0 {
		args0 = container.Args[0]
	}
	if genIndex >= 0 {
		gen = container.Env[genIndex].Value
	}
	newArgs0, newGen := args0, gen
	if !present[envPassword] && role == "head" && c.Password != nil {
		newArgs0, newGen = addFlag(args0), addFlag(gen)
		if newArgs0 != args0 || newGen != gen {
			names = append(names, flagPasswordNm)
		}
	}
	if len(annotations) == 0 && len(env) == 0 && newArgs0 == args0 && newGen == gen {
		return admission.Allowed("")
	}

	injected := make([]string, 0, len(annotations)+len(names))
	for _, a := range annotations {
		injected = append(injected, a[0])
	}
	injected = append(injected, names...)
	var ops []jsonpatch.JsonPatchOperation
	if pod.Annotations == nil {
		value := map[string]string{annInjected: strings.Join(injected, ",")}
		for _, a := range annotations {
			value[a[0]] = a[1]
		}
		ops = append(ops, jsonpatch.NewOperation("add", "/metadata/annotations", value))
	} else {
		for _, a := range annotations {
			ops = append(ops, jsonpatch.NewOperation("add", "/metadata/annotations/"+escape(a[0]), a[1]))
		}
		op := "add"
		if _, ok := pod.Annotations[annInjected]; ok {
			op = "replace" // a reinvocation: keep it simple, the benchmark never sends one
		}
		ops = append(ops, jsonpatch.NewOperation(op, "/metadata/annotations/"+escape(annInjected),
			strings.Join(injected, ",")))
	}
	if len(env) > 0 && container.Env == nil {
		ops = append(ops, jsonpatch.NewOperation("add", "/spec/containers/0/env", env))
	} else {
		for _, e := range env {
			ops = append(ops, jsonpatch.NewOperation("add", "/spec/containers/0/env/-", e))
		}
	}
	if newArgs0 != args0 {
		ops = append(ops, jsonpatch.NewOperation("replace", "/spec/containers/0/args/0", newArgs0))
	}
	if newGen != gen {
		ops = append(ops, jsonpatch.NewOperation("replace",
			"/spec/containers/0/env/"+strconv.Itoa(genIndex)+"/value", newGen))
	}
	return admission.Patched("", ops...)
}

func main() {
	host := flag.String("host", "127.0.0.1", "listen address")
	port := flag.Int("port", 9443, "HTTPS port")
	certDir := flag.String("cert-dir", "", "folder with tls.crt and tls.key")
	folder := flag.String("rayclusters-from", "", "folder of RayCluster JSON manifests")
	address := flag.String("default-redis-address", "", "admin default Redis address")
	password := flag.String("default-redis-password-secret", "", "admin default Secret NAME[/KEY]")
	workerTO := flag.Int("worker-reconnect-timeout-s", 600, "worker GCS reconnect timeout")
	flag.Parse()

	log.SetLogger(logr.Discard()) // like ray-ft-webhook: nothing logged per admission
	clusters, err := loadClusters(*folder, defaults{address: *address, passwordSecret: *password, workerTO: *workerTO})
	if err != nil {
		fmt.Fprintln(os.Stderr, "crwebhook:", err)
		os.Exit(2)
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		panic(err)
	}
	server := webhook.NewServer(webhook.Options{
		Host: *host, Port: *port, CertDir: *certDir, CertName: "tls.crt", KeyName: "tls.key",
		TLSOpts: []func(*tls.Config){func(c *tls.Config) {
			c.MinVersion = tls.VersionTLS12
			c.NextProtos = []string{"http/1.1"} // as controller-runtime recommends since the HTTP/2 CVEs
		}},
	})
	server.Register("/mutate", &webhook.Admission{Handler: &injector{decoder: admission.NewDecoder(scheme), clusters: clusters}})
	fmt.Fprintf(os.Stderr, "crwebhook: %d RayClusters, serving on %s:%d\n", len(clusters), *host, *port)
	if err := server.Start(signals.SetupSignalHandler()); err != nil {
		fmt.Fprintln(os.Stderr, "crwebhook:", err)
		os.Exit(1)
	}
}
