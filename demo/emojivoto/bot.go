package emojivoto

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sort"
	"sync"
	"time"
)

// Bot drives steady traffic at the web front end, as emojivoto's vote-bot
// does, and keeps its own ground truth of what it sent and what failed, so
// tests and the demo can compare the mesh's figures with it.
type Bot struct {
	// WebURL is the front end's base URL, for example http://web-svc.emojivoto:80.
	WebURL string
	// Rate is how many list+vote rounds to run per second.
	Rate float64
	// Client sends the requests; nil means a client with a 5 s timeout.
	Client *http.Client
	// Rand picks the emoji; nil means a random source.
	Rand *rand.Rand

	mu    sync.Mutex
	truth map[string]*TargetTruth
	start time.Time
}

// TargetTruth is what the bot saw for one route.
type TargetTruth struct {
	Sent     int64            `json:"sent"`
	Failed   int64            `json:"failed"`
	ByStatus map[string]int64 `json:"by_status"`
}

// Truth is the bot's ground truth at one instant.
type Truth struct {
	Since   time.Time               `json:"since"`
	At      time.Time               `json:"at"`
	Targets map[string]*TargetTruth `json:"targets"`
}

// Run sends rounds until ctx ends. Each round lists the emoji, then votes
// for one of them.
func (b *Bot) Run(ctx context.Context) error {
	if b.Rate <= 0 {
		return fmt.Errorf("vote-bot: rate must be positive, got %v", b.Rate)
	}
	client := b.Client
	if client == nil {
		client = &http.Client{Timeout: 5 * time.Second}
	}
	rnd := b.Rand
	if rnd == nil {
		rnd = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	b.mu.Lock()
	b.start = time.Now()
	b.mu.Unlock()
	tick := time.NewTicker(time.Duration(float64(time.Second) / b.Rate))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		b.get(ctx, client, "/api/list", "/api/list")
		e := emojiList[rnd.IntN(len(emojiList))]
		b.get(ctx, client, "/api/vote", "/api/vote?choice="+e.Shortcode)
	}
}

func (b *Bot) get(ctx context.Context, client *http.Client, route, path string) {
	status := "error"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.WebURL+path, nil)
	if err == nil {
		var resp *http.Response
		resp, err = client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			status = fmt.Sprint(resp.StatusCode)
			if resp.StatusCode >= 400 {
				err = fmt.Errorf("status %d", resp.StatusCode)
			}
		}
	}
	if ctx.Err() != nil {
		return // shutting down: not a failure of the service
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.truth == nil {
		b.truth = map[string]*TargetTruth{}
	}
	t := b.truth[route]
	if t == nil {
		t = &TargetTruth{ByStatus: map[string]int64{}}
		b.truth[route] = t
	}
	t.Sent++
	t.ByStatus[status]++
	if err != nil {
		t.Failed++
	}
}

// Truth returns a copy of the ground truth so far.
func (b *Bot) Truth() Truth {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := Truth{Since: b.start, At: time.Now(), Targets: map[string]*TargetTruth{}}
	for k, v := range b.truth {
		c := &TargetTruth{Sent: v.Sent, Failed: v.Failed, ByStatus: map[string]int64{}}
		for s, n := range v.ByStatus {
			c.ByStatus[s] = n
		}
		out.Targets[k] = c
	}
	return out
}

// TruthHandler serves the ground truth as JSON.
func (b *Bot) TruthHandler() http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {
		rw.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(rw)
		enc.SetIndent("", "  ")
		_ = enc.Encode(b.Truth())
	})
}

// Routes lists the routes in the truth, sorted, for printing.
func (t Truth) Routes() []string {
	out := make([]string, 0, len(t.Targets))
	for k := range t.Targets {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
