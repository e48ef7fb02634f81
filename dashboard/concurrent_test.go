package dashboard

import (
	"context"
	"io/fs"
	"net/http/httptest"
	"path"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"meshtls/fixtures"
	"meshtls/stat"
)

// captureFetcher answers the scraper with each pod's last scrape in the
// built-in capture, as the pod's proxy would, and counts the scrapes.
type captureFetcher struct {
	fsys fs.FS
	dir  string
	n    atomic.Int64
	// With open set, every scrape waits until hold scrapes are in flight
	// at once, then open is closed and they all go on; peak is the most
	// that were ever held together.
	hold, held, peak atomic.Int64
	open             chan struct{}
	opened           sync.Once
}

func (f *captureFetcher) Fetch(ctx context.Context, pod stat.Pod) ([]byte, error) {
	f.n.Add(1)
	if f.open != nil {
		n := f.held.Add(1)
		defer f.held.Add(-1)
		for p := f.peak.Load(); n > p && !f.peak.CompareAndSwap(p, n); p = f.peak.Load() {
		}
		if n >= f.hold.Load() {
			f.opened.Do(func() { close(f.open) })
		}
		select {
		case <-f.open:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return fs.ReadFile(f.fsys, path.Join(f.dir, pod.Namespace, pod.Name+".prom"))
}

// liveScraper is the scraper `linkerd dashboard` uses without Prometheus,
// over the emojivoto capture's pods: each computation waits one window.
func liveScraper(t *testing.T, window time.Duration) (*Server, *captureFetcher) {
	t.Helper()
	fsys, err := fixtures.Capture("emojivoto")
	if err != nil {
		t.Fatal(err)
	}
	c := openBuiltinCapture(t, "emojivoto")
	scrapes := c.Manifest().Scrapes
	f := &captureFetcher{fsys: fsys, dir: scrapes[len(scrapes)-1].Dir}
	return mustNew(t, Config{Metrics: &stat.Scraper{Fetcher: f}, Pods: c, Window: window, Refresh: time.Hour, SourceName: "scraped"}), f
}

// TestDeploymentPageComputationsOverlap: a deployment page needs three
// computations (its namespace's deployments and both directions of its
// edges). Scraping the proxies, each waits a whole window; they run at
// once, so the page takes one window, not three. Each computation still
// scrapes its own proxies once a round (26 scrapes for web's page, where
// the namespace page takes 10): the page costs exactly what the three cost
// alone, and no more.
//
// Overlap is shown by events, not by the clock: every scrape is held
// until all the first-round scrapes of the three computations are in
// flight together. In turn, the first computation would wait forever for
// the others' scrapes; the page's deadline then fails the test.
func TestDeploymentPageComputationsOverlap(t *testing.T) {
	const window = 300 * time.Millisecond
	self := stat.Resource{Kind: stat.KindDeployment, Namespace: "emojivoto", Name: "web"}
	all := stat.Resource{Kind: stat.KindDeployment, Namespace: "emojivoto"}
	var alone int64
	for _, q := range []stat.Query{{Resource: all, Unmeshed: true}, {Resource: all, From: &self}, {Resource: all, To: &self}} {
		_, f := liveScraper(t, window)
		q.Window = window
		if _, err := stat.Compute(context.Background(), q, &stat.Scraper{Fetcher: f}, openBuiltinCapture(t, "emojivoto")); err != nil {
			t.Fatal(err)
		}
		if f.n.Load() == 0 {
			t.Fatalf("%+v scraped nothing", q)
		}
		alone += f.n.Load()
	}

	s, f := liveScraper(t, window)
	const rounds = 2 // stat.Scraper's default
	f.hold.Store(alone / rounds)
	f.open = make(chan struct{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w := httptest.NewRecorder()
	s.ServeHTTP(w, httptest.NewRequest("GET", "/ns/emojivoto/deploy/web", nil).WithContext(ctx))
	select {
	case <-f.open:
	default:
		t.Fatalf("at most %d of the %d first-round scrapes were in flight at once: the page's computations ran in turn", f.peak.Load(), f.hold.Load())
	}
	if w.Code != 200 || w.Body.Len() == 0 {
		t.Fatalf("deployment page: %d: %s", w.Code, w.Body)
	}
	if got := f.n.Load(); got != alone {
		t.Errorf("the deployment page scraped %d times; its three computations alone scrape %d", got, alone)
	}
	// An unknown deployment is still a 404.
	w = httptest.NewRecorder()
	s.ServeHTTP(w, httptest.NewRequest("GET", "/ns/emojivoto/deploy/nope", nil))
	if w.Code != 404 {
		t.Errorf("unknown deployment: %d", w.Code)
	}
}

// TestSamePageTwiceComputesOnce: two pages asking the same figures while
// they are being computed share the one computation (one scrape of each
// proxy per round), rather than scraping every proxy twice.
func TestSamePageTwiceComputesOnce(t *testing.T) {
	const window = time.Second
	alone, fa := liveScraper(t, window)
	serve(t, alone, "/ns/emojivoto")
	once := fa.n.Load()

	s, f := liveScraper(t, window)
	var wg sync.WaitGroup
	pages := make([]string, 2)
	for i := range pages {
		wg.Add(1)
		go func() { defer wg.Done(); pages[i] = serve(t, s, "/ns/emojivoto") }()
	}
	wg.Wait()
	if got := f.n.Load(); got != once {
		t.Errorf("two concurrent namespace pages scraped %d times, one page %d", got, once)
	}
	if pages[0] != pages[1] {
		t.Error("the two pages differ")
	}
}
