package stat

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"meshtls/contract"

	"k8s.io/client-go/kubernetes"
)

// Fetcher reads one pod's proxy metrics.
type Fetcher interface {
	Fetch(ctx context.Context, pod Pod) ([]byte, error)
}

// ProxyFetcher reaches proxies directly when their pod IP is loopback (the
// local cluster) and otherwise through the API server's pod proxy.
type ProxyFetcher struct {
	Client kubernetes.Interface // for the pod proxy; may be nil for loopback only
	HTTP   *http.Client
	Port   int
}

// Fetch returns the text of the pod's /metrics.
func (f ProxyFetcher) Fetch(ctx context.Context, pod Pod) ([]byte, error) {
	port := f.Port
	if port == 0 {
		port = contract.AdminPort
	}
	ip := net.ParseIP(pod.IP)
	if ip != nil && ip.IsLoopback() || f.Client == nil {
		if pod.IP == "" {
			return nil, fmt.Errorf("pod %s/%s has no IP yet", pod.Namespace, pod.Name)
		}
		hc := f.HTTP
		if hc == nil {
			hc = &http.Client{Timeout: 10 * time.Second}
		}
		url := fmt.Sprintf("http://%s/metrics", net.JoinHostPort(pod.IP, fmt.Sprint(port)))
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return nil, err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		return io.ReadAll(resp.Body)
	}
	return f.Client.CoreV1().RESTClient().Get().
		Namespace(pod.Namespace).Resource("pods").
		Name(fmt.Sprintf("%s:%d", pod.Name, port)).
		SubResource("proxy").Suffix("metrics").
		DoRaw(ctx)
}

// Scraper measures live proxies: it scrapes every meshed pod, waits one
// window, scrapes again, and computes the figures itself.
type Scraper struct {
	Fetcher Fetcher
	// Progress, when set, is called about once a second while waiting.
	Progress func(remaining time.Duration, pods int)
	// Warn is told about pods that could not be scraped.
	Warn func(msg string)
	// Record, when set, receives every round (for capture record).
	Record func(at time.Time, bodies map[string][]byte) error
	// Rounds is the number of scrapes; at least 2.
	Rounds int
}

// scrapeBody is an already fetched scrape and when it arrived.
type scrapeBody struct {
	body   []byte
	source string
	at     time.Time
}

func (b scrapeBody) Open() ([]byte, error) { return b.body, nil }
func (b scrapeBody) Source() string        { return b.source }
func (b scrapeBody) At() time.Time         { return b.at }

func (s *Scraper) collect(ctx context.Context, window time.Duration, pods []Pod, queries []vectorQuery) (evaluator, error) {
	if window <= 0 {
		window = time.Minute
	}
	if len(pods) == 0 {
		return &aggregates{span: window, results: map[string][]sample{}}, nil
	}
	rounds := s.Rounds
	if rounds < 2 {
		rounds = 2
	}
	step := window / time.Duration(rounds-1)
	targets := make([]targetScrapes, len(pods))
	for i, p := range pods {
		targets[i] = targetScrapes{Name: "pod " + p.Namespace + "/" + p.Name, Target: p.TargetLabels()}
	}
	var firstAt, lastAt time.Time
	for round := 0; round < rounds; round++ {
		if round > 0 {
			if err := s.wait(ctx, firstAt.Add(time.Duration(round)*step), firstAt.Add(window), len(pods)); err != nil {
				return nil, err
			}
		}
		at := time.Now()
		if round == 0 {
			firstAt = at
		}
		lastAt = at
		bodies, arrived := s.fetchAll(ctx, pods)
		record := map[string][]byte{}
		for i, b := range bodies {
			if b == nil {
				targets[i].Scrapes = append(targets[i].Scrapes, nil)
				continue
			}
			targets[i].Scrapes = append(targets[i].Scrapes, scrapeBody{b, targets[i].Name, arrived[i]})
			record[pods[i].Namespace+"/"+pods[i].Name] = b
		}
		if s.Record != nil {
			if err := s.Record(at, record); err != nil {
				return nil, err
			}
		}
	}
	return buildDeltas(ctx, targets, lastAt.Sub(firstAt), queries)
}

// withSenders adds every other meshed pod of the cluster to pods.
func (s *Scraper) withSenders(ctx context.Context, src PodSource, pods []Pod) ([]Pod, error) {
	all, err := src.Pods(ctx, "", nil)
	if err != nil {
		return nil, err
	}
	have := make(map[string]bool, len(pods))
	for _, p := range pods {
		have[p.Namespace+"/"+p.Name] = true
	}
	for _, p := range all {
		if p.Meshed && !have[p.Namespace+"/"+p.Name] {
			pods = append(pods, p)
		}
	}
	return pods, nil
}

func (s *Scraper) wait(ctx context.Context, until, end time.Time, pods int) error {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		left := time.Until(until)
		if left <= 0 {
			return nil
		}
		if s.Progress != nil {
			s.Progress(time.Until(end), pods)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		case <-time.After(left):
		}
	}
}

// fetchAll scrapes pods concurrently, noting when each body arrived; a
// failed pod gives nil and a warning.
func (s *Scraper) fetchAll(ctx context.Context, pods []Pod) ([][]byte, []time.Time) {
	out := make([][]byte, len(pods))
	arrived := make([]time.Time, len(pods))
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for i := range pods {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			body, err := s.Fetcher.Fetch(ctx, pods[i])
			if err != nil {
				if s.Warn != nil && ctx.Err() == nil {
					s.Warn(fmt.Sprintf("cannot scrape pod %s/%s: %v", pods[i].Namespace, pods[i].Name, err))
				}
				return
			}
			out[i], arrived[i] = body, time.Now()
		}(i)
	}
	wg.Wait()
	return out, arrived
}
