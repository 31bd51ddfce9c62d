import NIOSSL

/// The controller's TLS: its server certificate and key, and the CA whose client certificates
/// identify devices. Clients without a certificate may connect (operators use tokens, devices
/// enroll); a certificate that is presented must chain to the CA and be within its validity, or
/// the handshake fails.
public struct ControllerTLS: Sendable {
    public var certificateFile: String
    public var privateKeyFile: String
    public var clientCAFile: String

    public init(certificateFile: String, privateKeyFile: String, clientCAFile: String) {
        self.certificateFile = certificateFile; self.privateKeyFile = privateKeyFile; self.clientCAFile = clientCAFile
    }

    func configuration() throws -> TLSConfiguration {
        let chain: [NIOSSLCertificate]
        let key: NIOSSLPrivateKey
        let roots: [NIOSSLCertificate]
        do { chain = try NIOSSLCertificate.fromPEMFile(certificateFile) } catch {
            throw ConfigError(file: certificateFile, message: "not a PEM certificate chain: \(error)")
        }
        do { key = try NIOSSLPrivateKey(file: privateKeyFile, format: .pem) } catch {
            throw ConfigError(file: privateKeyFile, message: "not a PEM private key: \(error)")
        }
        do { roots = try NIOSSLCertificate.fromPEMFile(clientCAFile) } catch {
            throw ConfigError(file: clientCAFile, message: "not a PEM CA certificate: \(error)")
        }
        guard !chain.isEmpty else { throw ConfigError(file: certificateFile, message: "no certificate in the file") }
        guard !roots.isEmpty else { throw ConfigError(file: clientCAFile, message: "no certificate in the file") }
        var c = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        c.trustRoots = .certificates(roots)
        c.certificateVerification = .optionalVerification
        c.minimumTLSVersion = .tlsv12
        return c
    }
}
