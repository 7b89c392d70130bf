package main

// The image is FROM scratch: no /etc/ssl/certs. The bridge calls the upstream over HTTPS, so it carries
// Mozilla's root set (as Go's x/crypto packages it) for when the system has none. A bundle found on the
// system (SSL_CERT_FILE, SSL_CERT_DIR, /etc/ssl/certs mounted into the container) is used instead, so an
// operator can still bring a private CA. The roots are pinned by go.sum, the same on every build host.
import _ "golang.org/x/crypto/x509roots/fallback"
