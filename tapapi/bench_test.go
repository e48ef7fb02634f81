package tapapi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"

	netpb "meshtls/proto/net"
	tappb "meshtls/proto/tap"
)

// replayedProxy is a proxy's tap server replaying encoded events (request,
// response, end triples of distinct streams) at rate events a second on
// every stream it serves: the bytes a real proxy sends, without the cost
// of encoding them again, so the benchmark's CPU is the tap API's.
type replayedProxy struct {
	tappb.UnimplementedTapServer
	events []rawEvent
	rate   int
}

// replayEvents encodes n requests' events, as one proxy reports them.
func replayEvents(n int, inbound bool) []rawEvent {
	meta := &tappb.TapEvent_EndpointMeta{Labels: map[string]string{"namespace": "emojivoto", "pod": "web-1", "deployment": "web"}}
	srcMeta, dir := meta, tappb.TapEvent_OUTBOUND
	if inbound {
		// An inbound request as a proxy reports it: the client is an
		// address, which the tap API names.
		srcMeta, dir = &tappb.TapEvent_EndpointMeta{}, tappb.TapEvent_INBOUND
	}
	var out []rawEvent
	for i := range n {
		id := &tappb.TapEvent_Http_StreamId{Base: 7, Stream: uint64(i + 1)}
		stages := []*tappb.TapEvent_Http{
			{Event: &tappb.TapEvent_Http_RequestInit_{RequestInit: &tappb.TapEvent_Http_RequestInit{
				Id: id, Method: "POST", Scheme: "http", Authority: "voting-svc.emojivoto:8080", Path: "/emojivoto.v1.VotingService/VoteDoughnut"}}},
			{Event: &tappb.TapEvent_Http_ResponseInit_{ResponseInit: &tappb.TapEvent_Http_ResponseInit{
				Id: id, SinceRequestInit: durationpb.New(time.Millisecond), HttpStatus: 200}}},
			{Event: &tappb.TapEvent_Http_ResponseEnd_{ResponseEnd: &tappb.TapEvent_Http_ResponseEnd{
				Id: id, SinceRequestInit: durationpb.New(2 * time.Millisecond), ResponseBytes: 120,
				Eos: &tappb.TapEvent_Http_ResponseEnd_GrpcStatus{GrpcStatus: 0}}}},
		}
		for _, h := range stages {
			b, err := proto.Marshal(&tappb.TapEvent{
				Source:          &netpb.TcpAddress{Ip: []byte{10, 0, 0, 1}, Port: 40000},
				SourceMeta:      srcMeta,
				Destination:     &netpb.TcpAddress{Ip: []byte{10, 0, 0, 2}, Port: 8080},
				DestinationMeta: meta,
				ProxyDirection:  dir,
				Tls:             &tappb.TapEvent_Tls{Status: "true", ServerId: "voting.deployment.emojivoto.linkerd-managed.linkerd.svc.cluster.local"},
				Event:           &tappb.TapEvent_Http_{Http: h},
			})
			if err != nil {
				panic(err)
			}
			out = append(out, b)
		}
	}
	return out
}

func (p *replayedProxy) Observe(_ *tappb.ObserveRequest, stream grpc.ServerStreamingServer[tappb.TapEvent]) error {
	const tick = 10 * time.Millisecond
	t := time.NewTicker(tick)
	defer t.Stop()
	start := time.Now()
	n := 0
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case <-t.C:
		}
		// Catch up on late ticks, so the offered rate holds on a busy
		// machine.
		due := int(time.Since(start).Seconds() * float64(p.rate))
		for n < due {
			if err := stream.SendMsg(p.events[n%len(p.events)]); err != nil {
				return err
			}
			n++
		}
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkFanout100Proxies: 100 proxies at 500 events/s each (50,000/s
// in all) through the tap API's merge and framed stream to one client,
// which decodes every frame. The proxies are in-process gRPC servers on
// loopback replaying encoded events (plain text: the cost measured is the
// tap API's, not TLS's).
//
// The tap API names peer pods from a pod cache of 1,000 pods; the
// events are outbound to a destination discovery labelled, so none needs
// naming and what is measured is reading the peers off each event.
func BenchmarkFanout100Proxies(b *testing.B) { benchFanout(b, false) }

// BenchmarkFanout100ProxiesNamingPeers is the same with inbound events
// whose client (10.0.0.1) is a pod of the cache: every event is named.
func BenchmarkFanout100ProxiesNamingPeers(b *testing.B) { benchFanout(b, true) }

func benchFanout(b *testing.B, inbound bool) {
	const proxies, perProxy = 100, 500
	const window = 10 * time.Second
	var eps []Endpoint
	events := replayEvents(1000, inbound)
	for i := range proxies {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		g := grpc.NewServer(grpc.ForceServerCodec(rawCodec{}))
		tappb.RegisterTapServer(g, &replayedProxy{events: events, rate: perProxy})
		go func() { _ = g.Serve(l) }()
		b.Cleanup(g.Stop)
		eps = append(eps, Endpoint{Pod: fmt.Sprintf("emojivoto/web-%d", i), Addr: l.Addr().String()})
	}
	var pods []runtime.Object
	for i := range 1000 {
		pods = append(pods, testPod("emojivoto", fmt.Sprintf("vote-bot-%d", i), fmt.Sprintf("10.0.%d.%d", i/250, 1+i%250),
			map[string]string{"linkerd.io/proxy-deployment": "vote-bot"}, nil))
	}
	peers := NewPeers(fake.NewClientset(pods...))
	pctx, pcancel := context.WithCancel(context.Background())
	b.Cleanup(pcancel)
	if err := peers.Run(pctx); err != nil {
		b.Fatal(err)
	}
	srv, err := New(Config{Client: fake.NewClientset(), Buffer: 8192, Peers: peers,
		Credentials: func(string) (credentials.TransportCredentials, error) { return insecure.NewCredentials(), nil }})
	if err != nil {
		b.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		srv.Stream(r.Context(), w, eps, nil, &tappb.ObserveRequest{})
	})}
	go func() { _ = hs.Serve(l) }()
	b.Cleanup(func() { _ = hs.Close() })

	for range b.N {
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+l.Addr().String()+"/", strings.NewReader(""))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		fr := NewFrameReader(resp.Body)
		var events, dropped uint64
		proxiesUp := 0
		// Warm up until every proxy streams, then measure a window.
		warm := time.Now().Add(20 * time.Second)
		for proxiesUp < proxies {
			ev, st, err := fr.Next()
			if err != nil {
				b.Fatal(err)
			}
			if st != nil {
				proxiesUp = st.Proxies
			}
			_ = ev
			if time.Now().After(warm) {
				b.Fatalf("only %d of %d proxies streaming after 20s", proxiesUp, proxies)
			}
		}
		start, cpu0 := time.Now(), cpuTime()
		for time.Since(start) < window {
			ev, st, err := fr.Next()
			if err != nil {
				if errors.Is(err, context.Canceled) {
					break
				}
				b.Fatal(err)
			}
			if ev != nil {
				if inbound && events == 0 && ev.GetSourceMeta().GetLabels()["deployment"] != "vote-bot" {
					b.Fatalf("inbound event's client not named: %v", ev.GetSourceMeta().GetLabels())
				}
				events++
				dropped += ev.GetDroppedBefore()
			}
			if st != nil {
				dropped += st.Dropped
			}
		}
		wall, cpu := time.Since(start), cpuTime()-cpu0
		cancel()
		resp.Body.Close()
		b.ReportMetric(float64(events)/wall.Seconds(), "events/s")
		b.ReportMetric(float64(dropped)/wall.Seconds(), "dropped/s")
		b.ReportMetric(cpu.Seconds()/wall.Seconds(), "cpu-cores")
		// What one CPU-second of this process (proxies' sending, the tap
		// API, the client's decoding) delivered: the figure that carries
		// over to a machine where the process is not starved.
		b.ReportMetric(float64(events)/cpu.Seconds(), "events/cpu-s")
	}
}
