// Package transport opens gRPC connections to a Campfire site the way the
// site expects them: plain text only to a loopback address (unless the caller
// says Insecure), mutual TLS with a participant's kit from `campfire provision`
// otherwise, and message size limits large enough for the site's messages.
package transport

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// MaxReceiveBytes is the receive limit set on every connection. gRPC-Go's
// default is 4 MiB; the site's control messages stay under 2 MiB and its
// data-plane chunks under 1 MiB, but an admin's job listing or a job's meta
// can be larger.
const MaxReceiveBytes = 64 << 20

// Options says how to reach a site.
type Options struct {
	// Site is host:port.
	Site string
	// TLSDir is a kit folder (ca.crt, <name>.crt, <name>.key); empty means plain text.
	TLSDir string
	// ServerName is the name the site's certificate carries, when it is not the dialled host.
	ServerName string
	// Insecure allows plain text to an address that is not loopback.
	Insecure bool
}

// Kit is a participant's TLS kit as `campfire provision` writes it.
type Kit struct {
	CA          []byte
	Certificate []byte
	Key         []byte
	// Name is the certificate's file name without ".crt": the participant's name.
	Name string
}

// ReadKit reads a kit folder: ca.crt, and the certificate named after the
// folder (or the only one besides ca.crt) with its key beside it.
func ReadKit(dir string) (*Kit, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("TLS kit %s: %w", dir, err)
	}
	names := map[string]bool{}
	var certificates []string
	for _, entry := range entries {
		names[entry.Name()] = true
		if strings.HasSuffix(entry.Name(), ".crt") && entry.Name() != "ca.crt" {
			certificates = append(certificates, entry.Name())
		}
	}
	if !names["ca.crt"] {
		return nil, fmt.Errorf("TLS kit %s: ca.crt is missing; a kit holds ca.crt, <name>.crt and <name>.key", dir)
	}
	sort.Strings(certificates)
	own := filepath.Base(filepath.Clean(dir)) + ".crt"
	if !names[own] {
		if len(certificates) != 1 {
			return nil, fmt.Errorf("TLS kit %s: needs one <name>.crt besides ca.crt, found %v", dir, certificates)
		}
		own = certificates[0]
	}
	name := strings.TrimSuffix(own, ".crt")
	if !names[name+".key"] {
		return nil, fmt.Errorf("TLS kit %s: %s has no %s.key beside it", dir, own, name)
	}
	kit := &Kit{Name: name}
	for path, into := range map[string]*[]byte{"ca.crt": &kit.CA, own: &kit.Certificate, name + ".key": &kit.Key} {
		if *into, err = os.ReadFile(filepath.Join(dir, path)); err != nil {
			return nil, fmt.Errorf("TLS kit %s: %w", dir, err)
		}
	}
	return kit, nil
}

// Credentials returns the transport credentials for the options: mutual TLS
// trusting only the project's CA with a kit, plain text without one (refused
// for a non-loopback site unless Insecure).
func Credentials(options Options) (credentials.TransportCredentials, error) {
	if options.TLSDir == "" {
		if !options.Insecure && !IsLoopback(options.Site) {
			return nil, fmt.Errorf("site %s is not on loopback: give a TLS kit, or allow plain text with Insecure", options.Site)
		}
		return insecure.NewCredentials(), nil
	}
	kit, err := ReadKit(options.TLSDir)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(kit.CA) {
		return nil, fmt.Errorf("TLS kit %s: ca.crt holds no PEM certificate", options.TLSDir)
	}
	pair, err := tls.X509KeyPair(kit.Certificate, kit.Key)
	if err != nil {
		return nil, fmt.Errorf("TLS kit %s: %w", options.TLSDir, err)
	}
	config := &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	if options.ServerName != "" {
		config.ServerName = options.ServerName
	}
	return credentials.NewTLS(config), nil
}

// Dial opens a connection (lazily: the first call connects) with the
// options' credentials and the receive limit.
func Dial(options Options, extra ...grpc.DialOption) (*grpc.ClientConn, error) {
	if options.Site == "" {
		return nil, errors.New("no site address: give host:port")
	}
	creds, err := Credentials(options)
	if err != nil {
		return nil, err
	}
	dialOptions := append([]grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxReceiveBytes)),
	}, extra...)
	return grpc.NewClient(options.Site, dialOptions...)
}

// IsLoopback tells whether host:port names this machine (127.0.0.0/8, ::1 or localhost).
func IsLoopback(site string) bool {
	host, _, err := net.SplitHostPort(site)
	if err != nil {
		host = site
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
