package destination

import (
	"context"
	"crypto/tls"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"meshtls/ca/pki"
	pb "meshtls/proto/destination"
)

// whoAsks answers every Get with the caller's verified identity.
type whoAsks struct {
	pb.UnimplementedDestinationServer
}

func (whoAsks) Get(_ *pb.GetDestination, s grpc.ServerStreamingServer[pb.Update]) error {
	return s.Send(&pb.Update{Update: &pb.Update_Add{Add: &pb.WeightedAddrSet{MetricLabels: map[string]string{"caller": callerIdentity(s.Context())}}}})
}

// TestEitherCredentialsRecordCaller: on the one port, a proxy with a mesh
// certificate is seen by its verified identity and a plain-text one as
// "-"; a client certificate from another root is refused.
func TestEitherCredentialsRecordCaller(t *testing.T) {
	root, _, err := pki.NewRoot("test root", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ctrl := leafFor(t, root, "linkerd-controller.deployment.linkerd.linkerd-managed.linkerd.svc.cluster.local", time.Hour)
	srvCfg := &tls.Config{Certificates: []tls.Certificate{*ctrl}, ClientCAs: root.Pool(), ClientAuth: tls.VerifyClientCertIfGiven, NextProtos: []string{"h2"}}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(append(ServerOptions(), grpc.Creds(EitherCredentials(srvCfg)))...)
	pb.RegisterDestinationServer(g, whoAsks{})
	go func() { _ = g.Serve(l) }()
	t.Cleanup(g.Stop)

	ask := func(creds credentials.TransportCredentials) (string, error) {
		cc, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(creds))
		if err != nil {
			return "", err
		}
		defer cc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s, err := pb.NewDestinationClient(cc).Get(ctx, &pb.GetDestination{Path: "x"})
		if err != nil {
			return "", err
		}
		u, err := s.Recv()
		if err != nil {
			return "", err
		}
		return u.GetAdd().GetMetricLabels()["caller"], nil
	}
	web := leafFor(t, root, webIdentity, time.Hour)
	mtls := credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{*web}, RootCAs: root.Pool(), ServerName: "linkerd-controller.deployment.linkerd.linkerd-managed.linkerd.svc.cluster.local"})
	if got, err := ask(mtls); err != nil || got != webIdentity {
		t.Errorf("mTLS caller recorded as %q (%v), want %s", got, err, webIdentity)
	}
	if got, err := ask(insecure.NewCredentials()); err != nil || got != "-" {
		t.Errorf("plain-text caller recorded as %q (%v), want -", got, err)
	}
	foreign, _, err := pki.NewRoot("foreign", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	forged := leafFor(t, foreign, webIdentity, time.Hour)
	fc := credentials.NewTLS(&tls.Config{RootCAs: root.Pool(), ServerName: "linkerd-controller.deployment.linkerd.linkerd-managed.linkerd.svc.cluster.local",
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return forged, nil }})
	if got, err := ask(fc); err == nil {
		t.Errorf("a certificate from another root was accepted, recorded as %q", got)
	}
}
