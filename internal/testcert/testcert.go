// Package testcert makes a throwaway certificate authority with a server and a client certificate, as PEM
// files in a test's temporary directory, for TLS tests of the webhook listener and of NATS.
package testcert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Files are the PEM files of one test CA; the server certificate is valid for 127.0.0.1, ::1 and
// localhost.
type Files struct {
	CA                    string // CA certificate
	ServerCert, ServerKey string
	ClientCert, ClientKey string
	pool                  *x509.CertPool
	server, client        tls.Certificate
}

// New writes a fresh CA, server and client key pair into tb.TempDir().
func New(tb testing.TB) *Files {
	tb.Helper()
	dir := tb.TempDir()
	caKey := newKey(tb)
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "bridge test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		tb.Fatalf("testcert: CA: %v", err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	f := &Files{CA: filepath.Join(dir, "ca.pem"), pool: x509.NewCertPool()}
	f.pool.AddCert(caCert)
	writePEM(tb, f.CA, "CERTIFICATE", caDER)

	leaf := func(name string, serial int64, usage x509.ExtKeyUsage) (certFile, keyFile string, pair tls.Certificate) {
		key := newKey(tb)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: name},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
			DNSNames:     []string{"localhost"},
			IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			tb.Fatalf("testcert: %s: %v", name, err)
		}
		kb, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			tb.Fatalf("testcert: %s key: %v", name, err)
		}
		certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
		writePEM(tb, certFile, "CERTIFICATE", der)
		writePEM(tb, keyFile, "EC PRIVATE KEY", kb)
		pair, err = tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			tb.Fatalf("testcert: load %s: %v", name, err)
		}
		return certFile, keyFile, pair
	}
	f.ServerCert, f.ServerKey, f.server = leaf("server", 2, x509.ExtKeyUsageServerAuth)
	f.ClientCert, f.ClientKey, f.client = leaf("client", 3, x509.ExtKeyUsageClientAuth)
	return f
}

// ServerTLS is a server config with the server certificate; requireClient makes it demand a client
// certificate signed by the CA.
func (f *Files) ServerTLS(requireClient bool) *tls.Config {
	c := &tls.Config{Certificates: []tls.Certificate{f.server}, MinVersion: tls.VersionTLS12}
	if requireClient {
		c.ClientCAs, c.ClientAuth = f.pool, tls.RequireAndVerifyClientCert
	}
	return c
}

// ClientTLS is a client config that trusts the CA.
func (f *Files) ClientTLS() *tls.Config {
	return &tls.Config{RootCAs: f.pool, MinVersion: tls.VersionTLS12}
}

func newKey(tb testing.TB) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatalf("testcert: key: %v", err)
	}
	return k
}

func writePEM(tb testing.TB, path, typ string, der []byte) {
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		tb.Fatalf("testcert: write %s: %v", path, err)
	}
}
