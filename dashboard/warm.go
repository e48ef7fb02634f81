package dashboard

import (
	"context"
	"errors"
	"sort"
	"time"

	"k8s.io/apimachinery/pkg/labels"

	"meshtls/stat"
)

// Warm fills the cache of a static source (a capture) before the server
// answers anyone: the namespaces page and every namespace page's
// deployments and authorities, from one run of the stat engine. Computing
// a page from scratch parses every proxy's scrapes (senders in any
// namespace name who sends plain text), so each namespace's first visitor
// used to pay that whole parse; one run with every page's queries parses
// them once, and startup carries it instead.
//
// The engine appends each query's rows in order, each row of its query's
// kind and namespace, so the run's rows split back into the results the
// pages ask for. Should a row fit no page, or two, nothing is kept and the
// pages compute as before: warming never changes a figure.
//
// It returns how many page results it cached. A live source is not
// warmed (its results last --refresh only).
func (s *Server) Warm(ctx context.Context) (int, error) {
	if !s.cfg.Static || s.cfg.Pods == nil {
		return 0, nil
	}
	pods, err := s.cfg.Pods.Pods(ctx, "", labels.Everything())
	if err != nil {
		return 0, err
	}
	seen := map[string]bool{}
	var namespaces []string
	for _, p := range pods {
		if !seen[p.Namespace] {
			seen[p.Namespace] = true
			namespaces = append(namespaces, p.Namespace)
		}
	}
	sort.Strings(namespaces)

	// The queries exactly as the pages build them (compute sets Window).
	type pageQueries struct{ qs []stat.Query }
	pages := []pageQueries{{[]stat.Query{{Resource: stat.Resource{Kind: stat.KindNamespace}}}}}
	for _, ns := range namespaces {
		pages = append(pages, pageQueries{[]stat.Query{
			{Resource: stat.Resource{Kind: stat.KindDeployment, Namespace: ns}},
			{Resource: stat.Resource{Kind: stat.KindAuthority, Namespace: ns}}}})
	}
	var all []stat.Query
	for i := range pages {
		for j := range pages[i].qs {
			pages[i].qs[j].Window = s.cfg.Window
		}
		all = append(all, pages[i].qs...)
	}
	res, err := stat.ComputeAll(ctx, all, s.cfg.Metrics, s.cfg.Pods)
	if err != nil {
		return 0, err
	}

	// owner says which query of all a row came from: its kind, and for
	// a namespaced query its namespace.
	owner := func(r stat.Row, q stat.Query) bool {
		if r.Kind != q.Resource.Kind {
			return false
		}
		return q.Resource.Kind == stat.KindNamespace || r.Namespace == q.Resource.Namespace
	}
	split := make([]*stat.Result, len(pages))
	for i := range pages {
		split[i] = &stat.Result{Window: res.Window, Warnings: res.Warnings}
	}
	qi := 0 // rows come in query order: a row belongs to the query at qi or a later one
	flat := make([]int, 0, len(all))
	for i, p := range pages {
		for range p.qs {
			flat = append(flat, i)
		}
	}
	for _, r := range res.Rows {
		for qi < len(all) && !owner(r, all[qi]) {
			qi++
		}
		if qi == len(all) {
			return 0, errors.New("dashboard: a row of the warm-up fits no page; pages are computed on demand")
		}
		// A row that another query could also own would make the split
		// ambiguous.
		for k := qi + 1; k < len(all); k++ {
			if owner(r, all[k]) {
				return 0, errors.New("dashboard: a row of the warm-up fits two pages; pages are computed on demand")
			}
		}
		page := split[flat[qi]]
		page.Rows = append(page.Rows, r)
	}

	s.statMu.Lock()
	defer s.statMu.Unlock()
	for i, p := range pages {
		if len(s.cache) >= maxCached {
			break
		}
		s.cache[queryKey(p.qs)] = cached{at: time.Now(), res: split[i]}
	}
	return len(pages), nil
}
