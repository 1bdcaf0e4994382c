// Package certexpiry is the detector for certificates about to expire:
// the control plane's own (kubeadm's pki directory, the client
// certificates in its kubeconfigs), the cluster's TLS secrets, and what
// live TLS endpoints such as the apiserver and etcd actually present. An
// expired apiserver or kubelet certificate takes a cluster down at a time
// nobody chose, often a weekend; this detector says so while there is
// still time to renew, and says it on a workday.
//
// On each node (inside `healer agent`) it reads PEM files (Config.Files,
// or kubeadm's layout under Config.KubeadmDir: pki/*.crt, pki/etcd/*.crt
// and the admin, super-admin, kubelet, controller-manager and scheduler
// kubeconfigs) and the client certificates of kubeconfig users
// (client-certificate-data, or the client-certificate file, relative to
// the kubeconfig), and handshakes with local endpoints. On the server
// (inside `healer serve`) it lists the TLS secrets (type
// kubernetes.io/tls) of the configured namespaces, or all, with client-go,
// and handshakes with the configured endpoints. A handshake does not
// verify the peer (InsecureSkipVerify): it only reads the presented leaf
// certificate, which may well be expired or from a private CA, sends
// nothing and closes the connection; an endpoint that wants a client
// certificate, like etcd, presents its own before it refuses.
//
// Every certificate is reported, CAs included (is_ca says which), with a
// key stable per location: "<node>:file:<path>",
// "<node>:kubeconfig:<path>:<user>", "secret:<namespace>/<name>" and
// "<node>:endpoint:<host:port>". The Thresholds (default 30, 7 and 1
// days) divide the time before expiry into bands, and a certificate fires
// once for each band it enters — CertificateExpiring — and once more,
// CertificateExpired, when it is past its NotAfter. Its location resolves
// when it holds a renewed certificate outside every band, or no
// certificate any more. A band that a certificate would enter on a
// Saturday or a Sunday is entered at the start of the Friday before
// (Config.Weekend). Event ids derive from the status, the key, the
// certificate's SHA-256 and the band, so a restarted detector that finds
// the same certificate in the same band publishes an event JetStream has
// already stored.
//
// The events carry what the cert.renew remediator (not written yet) and
// a person need: the location, the subject and SANs, the issuer, serial,
// validity, days left, key type and usages, and a best guess at the
// component that uses the certificate and the ones to restart once it is
// renewed (KubeadmComponents, extended by Config.Components).
//
// The core is pure and table-tested: ParsePEM and NewCert describe
// certificates, Bands places a certificate in a band at a given time, and
// Evaluator turns rounds of observations, each with its time, into firing
// and resolved transitions. The Detector wires them to the sources. A
// source that cannot be read (a directory, a kubeconfig, the secrets of
// a namespace, an endpoint that does not answer) is logged when it starts
// failing and when it reads again, and the certificates it held keep
// their state rather than resolve.
package certexpiry
