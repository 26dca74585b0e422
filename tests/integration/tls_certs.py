"""Test PKI for the TLS integration tests, made with the `openssl` command-line tool (OpenSSL 3.0
on Debian 12). Every key is EC P-256, every certificate is valid for 2 days.

    pki = tls_certs.Pki(directory)      # generates everything below into `directory`
    pki.ca                              # server CA (root); clients trust this one
    pki.api                             # leaf: api.example.test, *.api.example.test
    pki.other                           # leaf: other.example.test, signed by an intermediate;
                                        #   other.pem holds leaf + intermediate (a chain)
    pki.clients_ca                      # CA that Turnpike trusts for client certificates
    pki.client                          # client cert: CN=client-1,O=Acme (clients CA), SAN
                                        #   DNS:client-1.acme.test, URI:spiffe://acme/client-1
    pki.client2                         # client cert: CN=client-2,O=Acme, two DNS SANs
    pki.rogue_ca, pki.rogue_client      # an untrusted CA and a client cert (same subject as
                                        #   `client`) it signed
    pki.issue_server(name, dns, ...)    # another server leaf from pki.ca (e.g. for reloads)
    pki.new_key(name)                   # a lone key (matches no certificate)

Each issued item is a Cert with .cert and .key paths (a CA's .cert is its certificate) and
.serial (the int serial number). Run this file to generate a PKI into a temp dir and print it.
"""

import os
import random
import subprocess
import sys
import tempfile

_MIN_CONF = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
"""


class Cert:
    def __init__(self, cert, key, serial=None, subject=None):
        self.cert = cert
        self.key = key
        self.serial = serial
        self.subject = subject

    def __repr__(self):
        return "<Cert %s %s serial=%s>" % (self.subject, self.cert, self.serial)


def openssl(*args):
    """Runs openssl; raises with its output if it fails."""
    p = subprocess.run(["openssl"] + list(args), stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if p.returncode != 0:
        raise RuntimeError("openssl %s failed (%d):\n%s"
                           % (" ".join(args), p.returncode, p.stdout.decode("utf-8", "replace")))
    return p.stdout.decode("utf-8", "replace")


class Pki:
    def __init__(self, directory, generate=True):
        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        # A private, minimal openssl config: the system one's default extensions would clash
        # with ours (and differ between distributions).
        self.conf = self._write("openssl-min.cnf", _MIN_CONF)
        if generate:
            self.generate()

    def path(self, name):
        return os.path.join(self.dir, name)

    def _write(self, name, text):
        p = self.path(name)
        with open(p, "w") as f:
            f.write(text)
        return p

    def new_key(self, name):
        """A fresh EC P-256 key (PKCS#8 PEM) at DIR/name.key."""
        key = self.path(name + ".key")
        openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-out", key)
        return key

    def make_ca(self, name, cn, parent=None, pathlen=None):
        """A CA: self-signed root, or an intermediate signed by `parent`."""
        key = self.new_key(name)
        cert = self.path(name + ".pem")
        bc = "critical,CA:TRUE" + (",pathlen:%d" % pathlen if pathlen is not None else "")
        if parent is None:
            serial = random.getrandbits(63)
            openssl("req", "-config", self.conf, "-x509", "-new", "-key", key, "-sha256",
                    "-days", "2", "-subj", "/O=Turnpike Tests/CN=%s" % cn,
                    "-set_serial", str(serial),
                    "-addext", "basicConstraints=" + bc,
                    "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                    "-addext", "subjectKeyIdentifier=hash",
                    "-out", cert)
            return Cert(cert, key, serial, "CN=%s,O=Turnpike Tests" % cn)
        ext = ("basicConstraints=%s\nkeyUsage=critical,keyCertSign,cRLSign\n"
               "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid:always\n" % bc)
        return self._sign(name, key, "/O=Turnpike Tests/CN=%s" % cn, ext, parent,
                          "CN=%s,O=Turnpike Tests" % cn)

    def _sign(self, name, key, subj, ext_text, ca, subject_2253, chain=()):
        csr = self.path(name + ".csr")
        cert = self.path(name + ".pem")
        ext = self._write(name + ".ext", ext_text)
        openssl("req", "-config", self.conf, "-new", "-key", key, "-subj", subj, "-out", csr)
        serial = random.getrandbits(63)
        openssl("x509", "-req", "-in", csr, "-CA", ca.cert, "-CAkey", ca.key,
                "-set_serial", str(serial), "-days", "2", "-sha256", "-extfile", ext,
                "-out", cert)
        if chain:
            with open(cert, "a") as out:
                for c in chain:
                    with open(c.cert) as f:
                        out.write(f.read())
        return Cert(cert, key, serial, subject_2253)

    def issue_server(self, name, dns, ca=None, cn=None, chain=(), key=None):
        """A server leaf with SAN DNS names `dns` (CN defaults to the first name)."""
        ca = ca or self.ca
        cn = cn or dns[0]
        key = key or self.new_key(name)
        ext = ("basicConstraints=critical,CA:FALSE\n"
               "keyUsage=critical,digitalSignature\n"
               "extendedKeyUsage=serverAuth\n"
               "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid:always\n"
               "subjectAltName=%s\n" % ",".join("DNS:" + d for d in dns))
        return self._sign(name, key, "/O=Turnpike Tests/CN=%s" % cn, ext, ca,
                          "CN=%s,O=Turnpike Tests" % cn, chain)

    def issue_client(self, name, cn, org, sans, ca):
        """A client leaf, subject /O=org/CN=cn (RFC 2253: CN=cn,O=org), SANs like 'DNS:x'."""
        key = self.new_key(name)
        ext = ("basicConstraints=critical,CA:FALSE\n"
               "keyUsage=critical,digitalSignature\n"
               "extendedKeyUsage=clientAuth\n"
               "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid:always\n"
               "subjectAltName=%s\n" % ",".join(sans))
        return self._sign(name, key, "/O=%s/CN=%s" % (org, cn), ext, ca,
                          "CN=%s,O=%s" % (cn, org))

    def generate(self):
        self.ca = self.make_ca("ca", "Turnpike Test Server CA")
        self.intermediate = self.make_ca("intermediate", "Turnpike Test Intermediate CA",
                                         parent=self.ca, pathlen=0)
        self.api = self.issue_server("api", ["api.example.test", "*.api.example.test"])
        self.other = self.issue_server("other", ["other.example.test"], ca=self.intermediate,
                                       chain=[self.intermediate])
        self.clients_ca = self.make_ca("clients-ca", "Turnpike Test Clients CA")
        self.client = self.issue_client(
            "client-1", "client-1", "Acme",
            ["DNS:client-1.acme.test", "URI:spiffe://acme/client-1"], self.clients_ca)
        self.client2 = self.issue_client(
            "client-2", "client-2", "Acme",
            ["DNS:client-2.acme.test", "DNS:alt.client-2.acme.test"], self.clients_ca)
        self.rogue_ca = self.make_ca("rogue-ca", "Turnpike Test Clients CA")  # same name!
        self.rogue_client = self.issue_client(
            "rogue-client", "client-1", "Acme",
            ["DNS:client-1.acme.test", "URI:spiffe://acme/client-1"], self.rogue_ca)
        return self

    def verify(self):
        """Sanity check of the generated chains with `openssl verify`."""
        out = []
        for ca, leaf, untrusted in ((self.ca, self.api, None),
                                    (self.ca, self.other, self.intermediate),
                                    (self.clients_ca, self.client, None),
                                    (self.clients_ca, self.client2, None),
                                    (self.rogue_ca, self.rogue_client, None)):
            args = ["verify", "-CAfile", ca.cert]
            if untrusted:
                args += ["-untrusted", untrusted.cert]
            out.append(openssl(*(args + [leaf.cert])).strip())
        # The rogue client must not verify against the clients CA.
        p = subprocess.run(["openssl", "verify", "-CAfile", self.clients_ca.cert,
                            self.rogue_client.cert], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT)
        if p.returncode == 0:
            raise RuntimeError("rogue client verified against the clients CA")
        return out


def main():
    d = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="tp-pki-")
    pki = Pki(d)
    for line in pki.verify():
        print(line)
    for name in ("ca", "intermediate", "api", "other", "clients_ca", "client", "client2",
                 "rogue_ca", "rogue_client"):
        c = getattr(pki, name)
        print("%-13s %s" % (name, c))
        print(openssl("x509", "-in", c.cert, "-noout", "-subject", "-issuer",
                      "-ext", "subjectAltName").rstrip().replace("\n", "\n              "))
    print("generated into", d)


if __name__ == "__main__":
    main()
