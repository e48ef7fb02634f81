package check

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func collect(t *testing.T, cats []Category, opts Options) (Summary, []Result) {
	t.Helper()
	var seen []Result
	sum := Run(context.Background(), cats, opts, func(r Result) { seen = append(seen, r) })
	return sum, seen
}

func TestRunStatuses(t *testing.T) {
	boom := errors.New("boom")
	cats := []Category{{Name: "a", Checkers: []Checker{
		{Description: "passes", Run: func(context.Context) error { return nil }},
		{Description: "warns", Warning: true, Hint: "h", Run: func(context.Context) error { return boom }},
		{Description: "downgraded", Run: func(context.Context) error { return Warn(boom) }},
		{Description: "skips", Run: func(context.Context) error { return Skip("no %s", "root") }},
		{Description: "notes", Run: func(context.Context) error { return WithNotes(nil, "n1") }},
	}}, {Name: "b", Checkers: []Checker{
		{Description: "fails", Hint: "fix it", Run: func(context.Context) error {
			return Problems([]Problem{{Kind: "deploy", Name: "web", Namespace: "ns", Reason: "r", Remedy: "m"}}, "%d owners broken")
		}},
	}}}
	sum, seen := collect(t, cats, Options{})
	want := []Status{StatusOK, StatusWarning, StatusWarning, StatusSkipped, StatusOK, StatusError}
	if len(seen) != len(want) {
		t.Fatalf("got %d results, want %d", len(seen), len(want))
	}
	for i, w := range want {
		if seen[i].Status != w {
			t.Errorf("%s: %s, want %s", seen[i].Description, seen[i].Status, w)
		}
	}
	if sum.Success {
		t.Error("an error must fail the run")
	}
	if seen[1].Hint != "h" || seen[5].Hint != "fix it" || seen[5].Error != "1 owners broken" {
		t.Errorf("hint/error not carried: %+v %+v", seen[1], seen[5])
	}
	if p := seen[5].Problems; len(p) != 1 || p[0].Object() != "deploy/web -n ns" {
		t.Errorf("problems: %+v", p)
	}
	if seen[3].Error != "no root" || len(seen[4].Notes) != 1 {
		t.Errorf("skip/notes: %+v %+v", seen[3], seen[4])
	}
}

func TestWarningsOnlySucceed(t *testing.T) {
	sum, _ := collect(t, []Category{{Name: "a", Checkers: []Checker{
		{Description: "w", Run: func(context.Context) error { return Warn(errors.New("soon")) }},
	}}}, Options{})
	if !sum.Success {
		t.Error("warnings alone must not fail the run")
	}
}

func TestFatalStops(t *testing.T) {
	var ran atomic.Bool
	sum, seen := collect(t, []Category{
		{Name: "a", Checkers: []Checker{{Description: "fatal", Fatal: true, Run: func(context.Context) error { return errors.New("no API") }}}},
		{Name: "b", Checkers: []Checker{{Description: "later", Run: func(context.Context) error { ran.Store(true); return nil }}}},
	}, Options{})
	if ran.Load() || len(seen) != 1 || !sum.Stopped || sum.Success {
		t.Errorf("fatal failure should stop the run: ran=%v seen=%d %+v", ran.Load(), len(seen), sum)
	}
}

func TestRetryUntilPassOrDeadline(t *testing.T) {
	var calls atomic.Int32
	cats := []Category{{Name: "a", Checkers: []Checker{{Description: "eventually", Retry: true, Run: func(context.Context) error {
		if calls.Add(1) < 3 {
			return errors.New("not yet")
		}
		return nil
	}}}}}
	sum, seen := collect(t, cats, Options{Wait: 5 * time.Second, RetryInterval: 10 * time.Millisecond})
	if !sum.Success || calls.Load() != 3 {
		t.Fatalf("calls=%d sum=%+v", calls.Load(), sum)
	}
	if len(seen) != 3 || !seen[0].Retrying || !seen[1].Retrying || seen[2].Retrying {
		t.Errorf("observer should see two retrying attempts then the final one: %+v", seen)
	}

	// Without --wait a retryable check runs once.
	calls.Store(0)
	sum, _ = collect(t, cats, Options{})
	if sum.Success || calls.Load() != 1 {
		t.Errorf("without wait: calls=%d success=%v", calls.Load(), sum.Success)
	}

	// A check that never passes gives up at the deadline.
	start := time.Now()
	never := []Category{{Name: "a", Checkers: []Checker{{Description: "never", Retry: true, Run: func(context.Context) error { return errors.New("no") }}}}}
	sum, _ = collect(t, never, Options{Wait: 200 * time.Millisecond, RetryInterval: 20 * time.Millisecond})
	if sum.Success || time.Since(start) > 2*time.Second {
		t.Errorf("never-passing check: success=%v after %s", sum.Success, time.Since(start))
	}
}

func TestPanicIsAFailedCheck(t *testing.T) {
	sum, seen := collect(t, []Category{{Name: "a", Checkers: []Checker{{Description: "p", Run: func(context.Context) error { panic("oops") }}}}}, Options{})
	if sum.Success || seen[0].Status != StatusError {
		t.Errorf("%+v", seen)
	}
}

// Lazy shares one load between checkers but reloads for a retry, so a
// retried check sees the cluster as it is now.
func TestLazyReloadsOnRetry(t *testing.T) {
	var loads atomic.Int32
	l := NewLazy(func(context.Context) (int32, error) { return loads.Add(1), nil })
	var firstSeen, thirdSeen atomic.Int32
	attempts := 0
	cats := []Category{{Name: "a", Checkers: []Checker{
		{Description: "first", Run: func(ctx context.Context) error { v, _ := l.Get(ctx); firstSeen.Store(v); return nil }},
		{Description: "retried", Retry: true, Run: func(ctx context.Context) error {
			_, _ = l.Get(ctx)
			attempts++
			if attempts < 2 {
				return errors.New("again")
			}
			return nil
		}},
		{Description: "third", Run: func(ctx context.Context) error { v, _ := l.Get(ctx); thirdSeen.Store(v); return nil }},
	}}}
	collect(t, cats, Options{Wait: 5 * time.Second, RetryInterval: 5 * time.Millisecond})
	if firstSeen.Load() != 1 || loads.Load() != 2 || thirdSeen.Load() != 2 {
		t.Errorf("first saw %d, loads %d, third saw %d; want 1, 2, 2", firstSeen.Load(), loads.Load(), thirdSeen.Load())
	}
	// Errors are not cached.
	var fails atomic.Int32
	bad := NewLazy(func(context.Context) (int, error) { fails.Add(1); return 0, errors.New("x") })
	_, _ = bad.Get(context.Background())
	_, _ = bad.Get(context.Background())
	if fails.Load() != 2 {
		t.Errorf("a failed load should be retried by the next caller, loads=%d", fails.Load())
	}
}

func TestVersionSupported(t *testing.T) {
	for v, ok := range map[string]bool{"v1.36.3": true, "v1.29.9": false, "v1.30.0": true, "v1.30.2-eks-1234": true, "v1.28.9": false, "garbage": false} {
		if err := versionSupported(v); (err == nil) != ok {
			t.Errorf("%s: %v", v, err)
		}
	}
}

func TestLeaseProblem(t *testing.T) {
	now := time.Now()
	pods := []corev1.Pod{{ObjectMeta: metav1.ObjectMeta{Name: "linkerd-ca-a"}}, {ObjectMeta: metav1.ObjectMeta{Name: "linkerd-ca-b"}}}
	holder := func(s string) *string { return &s }
	renew := &metav1.MicroTime{Time: now.Add(-5 * time.Second)}
	stale := &metav1.MicroTime{Time: now.Add(-time.Minute)}
	dur := int32(15)
	if err := leaseProblem(holder("linkerd-ca-b"), renew, &dur, pods, now); err != nil {
		t.Errorf("live holder: %v", err)
	}
	for name, err := range map[string]error{
		"no holder":   leaseProblem(holder(""), renew, &dur, pods, now),
		"lapsed":      leaseProblem(holder("linkerd-ca-b"), stale, &dur, pods, now),
		"gone holder": leaseProblem(holder("linkerd-ca-old"), renew, &dur, pods, now),
	} {
		if err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
