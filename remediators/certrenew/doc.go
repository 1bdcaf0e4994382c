// Package certrenew renews a control-plane certificate the way `kubeadm
// certs renew` does: re-issued by the existing CA with the same subject,
// SANs, key usages and key (so the key type stays), written atomically
// beside a backup of the old one; then the component that serves it is
// restarted and the live endpoint is checked to present the new
// certificate.
//
// The node half, Verbs, runs in `healer agent` on the master that holds
// the files: "cert.renew" re-issues one configured certificate, and
// "cert.check" reports the file's and the live endpoint's certificate. It
// refuses when the CA itself expires within MinCALeft (a renewed leaf would
// die with its CA; the CA needs a human). The engine half, Remediator
// ("cert.renew"), asks the agent to renew, to restart the component
// (through the restart verbs) and checks the endpoint.
package certrenew
