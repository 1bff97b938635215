import Foundation
import NIOSSL

/// TLS of an HTTPRoute listener: a certificate per hostname (chosen by the ClientHello's
/// SNI, before any TLS code runs) and TLS passthrough by SNI.
///
/// Order: a certificate for the exact name, then a passthrough entry for the exact name, then
/// a wildcard certificate (`*.example.com`, one label), a wildcard passthrough entry, then
/// the default certificate; otherwise the connection is closed.
public final class HTTPRouteTLS: Sendable {
    /// What to do with a TLS connection.
    enum Choice {
        case terminate(NIOSSLContext, certificate: String)
        case passthrough(Destination)
        case refuse
    }

    let contexts: [String: NIOSSLContext]
    let passthrough: [String: Destination]
    let defaultName: String?

    /// Loads every certificate of `config` (PEM chain + PEM key); ALPN offers h2 and http/1.1.
    public init(_ config: HTTPRouteTLSConfig) throws {
        var files = config.certificates
        if let dir = config.certificateDir {
            // <host>.crt + <host>.key (a leading `_.` stands for `*.`).
            let names = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
            for name in names.sorted() where name.hasSuffix(".crt") {
                let base = String(name.dropLast(4))
                let host = base.hasPrefix("_.") ? "*." + base.dropFirst(2) : base
                guard files[host] == nil else { continue }
                files[host] = CertificateFiles(cert: dir + "/" + name, key: dir + "/" + base + ".key")
            }
        }
        var contexts: [String: NIOSSLContext] = [:]
        for (host, pair) in files {
            do {
                let chain = try NIOSSLCertificate.fromPEMFile(pair.cert).map { NIOSSLCertificateSource.certificate($0) }
                let key = try NIOSSLPrivateKey(file: pair.key, format: .pem)
                var tls = TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: .privateKey(key))
                tls.applicationProtocols = ["h2", "http/1.1"]
                tls.minimumTLSVersion = .tlsv12
                contexts[host.lowercased()] = try NIOSSLContext(configuration: tls)
            } catch {
                throw GateError(.config, "httproute TLS certificate for \(host) (\(pair.cert), \(pair.key)): \(error)")
            }
        }
        var passthrough: [String: Destination] = [:]
        for (host, target) in config.passthrough {
            guard let destination = try? Destination(parsing: target) else {
                throw GateError(.config, "httproute TLS passthrough[\"\(host)\"]: \(target) is not host:port")
            }
            passthrough[host.lowercased()] = destination
        }
        if let name = config.defaultCertificate, contexts[name.lowercased()] == nil {
            throw GateError(.config, "httproute TLS defaultCertificate \(name) names no certificate")
        }
        self.contexts = contexts
        self.passthrough = passthrough
        defaultName = config.defaultCertificate?.lowercased()
    }

    func choose(serverName: String?) -> Choice {
        let name = serverName?.lowercased() ?? ""
        if let context = contexts[name] { return .terminate(context, certificate: name) }
        if let destination = passthrough[name] { return .passthrough(destination) }
        if let dot = name.firstIndex(of: "."), dot != name.startIndex {
            let wildcard = "*" + name[dot...]
            if let context = contexts[wildcard] { return .terminate(context, certificate: wildcard) }
            if let destination = passthrough[wildcard] { return .passthrough(destination) }
        }
        if let defaultName, let context = contexts[defaultName] { return .terminate(context, certificate: defaultName) }
        return .refuse
    }
}
