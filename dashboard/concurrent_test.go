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
}

func (f *captureFetcher) Fetch(_ context.Context, pod stat.Pod) ([]byte, error) {
	f.n.Add(1)
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

// TestDeploymentPageScrapesOnce: a deployment page needs three
// computations (its namespace's deployments and both directions of its
// edges). Scraping the proxies, each waits a whole window; they run at
// once, so the page takes one window, not three.
func TestDeploymentPageScrapesOnce(t *testing.T) {
	const window = 3 * time.Second
	s, _ := liveScraper(t, window)
	start := time.Now()
	if body := serve(t, s, "/ns/emojivoto/deploy/web"); len(body) == 0 {
		t.Fatal("empty page")
	}
	// In turn they would take at least 3 windows (9 s).
	if took := time.Since(start); took >= 2*window {
		t.Errorf("the deployment page took %v with a %v window: its computations did not overlap", took, window)
	} else {
		t.Logf("deployment page, scraping with a %v window: %v", window, took)
	}
	// An unknown deployment is still a 404.
	w := httptest.NewRecorder()
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
