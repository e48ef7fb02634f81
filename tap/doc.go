// Package tap is the engine behind `linkerd tap`: it turns the proxies'
// TapEvents into correlated request events, filters them with a small
// predicate language, prints them as Linkerd's text lines, wide lines or
// JSON, aggregates them per source→destination edge, and records and
// replays streams. It knows nothing of cobra or terminals; a Source hides
// where events come from (a recorded file today, the tap API later).
package tap
