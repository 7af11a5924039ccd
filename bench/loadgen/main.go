// Command loadgen sends AdmissionReviews to a webhook over HTTPS with keep-alive and prints JSON results.
//
// Two modes, both bounded by a request count AND a duration, so every run stops by itself:
//
//	-mode rate: open loop at a fixed arrival rate. Request i is scheduled at start+i/rate and its latency is
//	  measured from that scheduled time, not from when a connection became free, so a slow server is not
//	  hidden by the generator waiting for it (no coordinated omission).
//	-mode max:  closed loop, every connection sends its next request as soon as the previous one answered.
//
// Each of -conns workers owns one HTTP/1.1 connection (like the apiserver's reused connections), trusting
// only -ca. Bodies come from -bodies, one AdmissionReview per line, used round-robin; a response counts
// as good only with status 200 and the request's uid in it.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

type body struct {
	data []byte
	uid  []byte // `"uid":"<uid>"`, which a good response contains
}

type result struct {
	Mode        string   `json:"mode"`
	Conns       int      `json:"conns"`
	Rate        float64  `json:"rate,omitempty"`
	Count       int      `json:"count"`
	Errors      int      `json:"errors"`
	Unsent      int      `json:"unsent"`
	WarmupCount int64    `json:"warmup_count"`
	NewConns    int64    `json:"new_conns"`
	DurationS   float64  `json:"duration_s"`
	RPS         float64  `json:"rps"`
	P50Ms       float64  `json:"p50_ms"`
	P90Ms       float64  `json:"p90_ms"`
	P99Ms       float64  `json:"p99_ms"`
	P999Ms      float64  `json:"p999_ms"`
	MaxMs       float64  `json:"max_ms"`
	MeanMs      float64  `json:"mean_ms"`
	ClientCPUS  float64  `json:"client_cpu_s"`
	ErrorSample []string `json:"error_sample,omitempty"`
}

type worker struct {
	client    *http.Client
	url       string
	latencies []time.Duration
	errors    int
	samples   []string
	newConns  *atomic.Int64
}

func loadBodies(path string) ([]body, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []body
	for _, line := range bytes.Split(raw, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		var review struct {
			Request struct {
				UID string `json:"uid"`
			} `json:"request"`
		}
		if err := json.Unmarshal(line, &review); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		uid, _ := json.Marshal(review.Request.UID)
		out = append(out, body{data: line, uid: append([]byte(`"uid":`), uid...)})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no bodies", path)
	}
	return out, nil
}

func newClient(ca *x509.CertPool, timeout time.Duration) *http.Client {
	transport := &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: ca, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}},
		TLSNextProto:        map[string]func(string, *tls.Conn) http.RoundTripper{}, // HTTP/1.1 only
		MaxIdleConnsPerHost: 1,
		MaxConnsPerHost:     1,
		IdleConnTimeout:     120 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
	return &http.Client{Transport: transport, Timeout: timeout}
}

// send makes one request; it returns an error text for anything but a 200 answer carrying the uid.
func (w *worker) send(b body) string {
	trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
		if !info.Reused {
			w.newConns.Add(1)
		}
	}}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace),
		http.MethodPost, w.url, bytes.NewReader(b.data))
	if err != nil {
		return err.Error()
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := w.client.Do(req)
	if err != nil {
		return err.Error()
	}
	data, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return err.Error()
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Sprintf("HTTP %d: %.200s", resp.StatusCode, data)
	}
	if !bytes.Contains(bytes.ReplaceAll(data, []byte(`"uid": `), []byte(`"uid":`)), b.uid) {
		return fmt.Sprintf("uid missing from answer: %.200s", data)
	}
	return ""
}

func (w *worker) record(started time.Time, b body) {
	if msg := w.send(b); msg != "" {
		w.errors++
		if len(w.samples) < 3 {
			w.samples = append(w.samples, msg)
		}
		return
	}
	w.latencies = append(w.latencies, time.Since(started))
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

func percentile(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p * float64(len(sorted)-1))
	return float64(sorted[i]) / 1e6
}

func main() {
	url := flag.String("url", "", "https://host:port/mutate")
	caPath := flag.String("ca", "", "CA certificate (PEM) to trust")
	bodiesPath := flag.String("bodies", "", "file with one AdmissionReview JSON per line")
	mode := flag.String("mode", "max", "rate (open loop) or max (closed loop)")
	rate := flag.Float64("rate", 1000, "requests per second in -mode rate")
	conns := flag.Int("conns", 16, "connections (one worker each)")
	requests := flag.Int("requests", 100000, "at most this many measured requests")
	duration := flag.Duration("duration", 10*time.Second, "at most this long for the measured requests")
	warmup := flag.Duration("warmup", 2*time.Second, "closed-loop warm-up on every connection first (not measured)")
	timeout := flag.Duration("timeout", 10*time.Second, "per-request time bound")
	flag.Parse()

	fail := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "loadgen: "+format+"\n", args...)
		os.Exit(2)
	}
	if *url == "" || *caPath == "" || *bodiesPath == "" || *conns < 1 || *requests < 1 || *rate <= 0 {
		fail("need -url, -ca, -bodies, -conns >= 1, -requests >= 1, -rate > 0")
	}
	pem, err := os.ReadFile(*caPath)
	if err != nil {
		fail("%v", err)
	}
	ca := x509.NewCertPool()
	if !ca.AppendCertsFromPEM(pem) {
		fail("%s: no certificate", *caPath)
	}
	bodies, err := loadBodies(*bodiesPath)
	if err != nil {
		fail("%v", err)
	}

	var newConns, warmed atomic.Int64
	workers := make([]*worker, *conns)
	for i := range workers {
		workers[i] = &worker{client: newClient(ca, *timeout), url: *url, newConns: &newConns,
			latencies: make([]time.Duration, 0, *requests / *conns + 1)}
	}

	// Warm-up: open every connection and run closed loop for a while; results are dropped.
	var wg sync.WaitGroup
	warmEnd := time.Now().Add(*warmup)
	for i, w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := i; n == i || time.Now().Before(warmEnd); n += *conns {
				w.send(bodies[n%len(bodies)])
				warmed.Add(1)
			}
		}()
	}
	wg.Wait()
	newConns.Store(0)

	cpu0 := cpuSeconds()
	start := time.Now()
	deadline := start.Add(*duration)
	// Requests still queued this long after the deadline are dropped as unsent (the run must end).
	hardStop := deadline.Add(*timeout)
	var unsent atomic.Int64
	switch *mode {
	case "rate":
		interval := time.Duration(float64(time.Second) / *rate)
		n := *requests
		if max := int(float64(*duration)/float64(interval)) + 1; max < n {
			n = max
		}
		schedule := make(chan int, n)
		for _, w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range schedule {
					at := start.Add(time.Duration(i) * interval)
					if time.Now().After(hardStop) {
						unsent.Add(1)
						continue
					}
					w.record(at, bodies[i%len(bodies)])
				}
			}()
		}
		for i := 0; i < n; i++ {
			at := start.Add(time.Duration(i) * interval)
			if at.After(deadline) {
				break
			}
			if d := time.Until(at); d > 0 {
				time.Sleep(d)
			}
			schedule <- i
		}
		close(schedule)
	case "max":
		var next atomic.Int64
		for _, w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := int(next.Add(1)) - 1
					if i >= *requests || time.Now().After(deadline) {
						return
					}
					w.record(time.Now(), bodies[i%len(bodies)])
				}
			}()
		}
	default:
		fail("unknown -mode %q", *mode)
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu := cpuSeconds() - cpu0

	var all []time.Duration
	res := result{Mode: *mode, Conns: *conns, Unsent: int(unsent.Load()), NewConns: newConns.Load(),
		WarmupCount: warmed.Load()}
	if *mode == "rate" {
		res.Rate = *rate
	}
	for _, w := range workers {
		all = append(all, w.latencies...)
		res.Errors += w.errors
		for _, s := range w.samples {
			if len(res.ErrorSample) < 5 {
				res.ErrorSample = append(res.ErrorSample, s)
			}
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	var sum time.Duration
	for _, d := range all {
		sum += d
	}
	res.Count = len(all)
	res.DurationS = elapsed.Seconds()
	res.RPS = float64(res.Count) / elapsed.Seconds()
	res.P50Ms = percentile(all, 0.50)
	res.P90Ms = percentile(all, 0.90)
	res.P99Ms = percentile(all, 0.99)
	res.P999Ms = percentile(all, 0.999)
	if len(all) > 0 {
		res.MaxMs = float64(all[len(all)-1]) / 1e6
		res.MeanMs = float64(sum) / float64(len(all)) / 1e6
	}
	res.ClientCPUS = cpu
	out, _ := json.Marshal(res)
	fmt.Println(string(out))
}
