// Package heartbeat lets a long-lived loop tell its owner that it is still
// turning, without knowing the owner: the owner puts a beat function in
// the loop's context, the loop calls Beat at each turn. calyx-agent marks
// a loop that has not beaten within its deadline as stalled (/livez fails,
// the systemd watchdog stops being fed).
package heartbeat

import "context"

type key struct{}

// With returns ctx carrying beat, which Beat calls.
func With(ctx context.Context, beat func()) context.Context {
	return context.WithValue(ctx, key{}, beat)
}

// Beat reports that the loop running under ctx is alive. It does nothing
// when ctx carries no beat, so library loops may always call it.
func Beat(ctx context.Context) {
	if beat, ok := ctx.Value(key{}).(func()); ok {
		beat()
	}
}
