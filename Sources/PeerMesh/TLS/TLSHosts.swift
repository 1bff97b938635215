import Foundation
import NIOSSL
import X509

/// The plain-TLS host names a node serves (`MeshConfig.tlsHosts`), loaded and checked when the
/// node starts: each name's certificate chain and key are read from their PEM files, the leaf's
/// SAN must cover the name and the key must be the leaf's, else the node refuses to start with
/// an error naming the config field and the file.
struct TLSHosts: Sendable {
    struct Host: Sendable {
        let port: Int
        /// Server context: the name's chain and key, no client certificate asked, no ALPN, TLS 1.2+.
        let context: NIOSSLContext
    }

    /// By lower-cased name or `*.` wildcard.
    private let hosts: HostNameTable<Host>

    init(_ config: [String: TLSHostConfig]) throws {
        var hosts = HostNameTable<Host>()
        for name in config.keys.sorted() {
            let field = "mesh.tlsHosts[\"\(name)\"]"
            let lower = try TLSHostConfig.hostPattern(name, field: field)
            guard hosts[pattern: lower] == nil else { throw MeshError(.config, "field \(field): \(lower) is listed twice") }
            let entry = config[name]!
            try entry.validate(field: field)
            hosts[pattern: lower] = Host(port: entry.port, context: try Self.context(for: lower, entry, field: field))
        }
        self.hosts = hosts
    }

    /// The host entry for an SNI (any case): its exact name, else a wildcard entry covering it.
    func host(_ serverName: String) -> Host? { hosts.lookup(serverName) }

    private static func context(for name: String, _ entry: TLSHostConfig, field: String) throws -> NIOSSLContext {
        let certPEM = try read(entry.cert, field: "\(field).cert")
        let keyPEM = try read(entry.key, field: "\(field).key")
        let chain: [NIOSSLCertificate]
        let leaf: Certificate
        do {
            chain = try NIOSSLCertificate.fromPEMBytes(Array(certPEM.utf8))
            guard let first = chain.first else { throw MeshError(.certificate, "no CERTIFICATE block") }
            leaf = try Certificate(derEncoded: try first.toDERBytes())
        } catch {
            throw MeshError(.certificate, "field \(field).cert: \(entry.cert) is not a PEM certificate chain (\(error))")
        }
        let dnsNames = (try? leaf.extensions.subjectAlternativeNames)?.compactMap { general -> String? in
            if case .dnsName(let dns) = general { return dns.lowercased() }
            return nil
        } ?? []
        guard dnsNames.contains(where: { covers($0, name) }) else {
            throw MeshError(
                .certificate,
                "field \(field).cert: the certificate in \(entry.cert) is not valid for \(name) (its DNS names: \(dnsNames.isEmpty ? "none" : dnsNames.joined(separator: ", ")))")
        }
        let key: Certificate.PrivateKey
        do {
            key = try Certificate.PrivateKey(pemEncoded: keyPEM)
        } catch {
            throw MeshError(.certificate, "field \(field).key: \(entry.key) is not a PEM private key (\(error))")
        }
        guard key.publicKey == leaf.publicKey else {
            throw MeshError(.certificate, "field \(field).key: the key in \(entry.key) does not belong to the certificate in \(entry.cert)")
        }
        do {
            var server = TLSConfiguration.makeServerConfiguration(
                certificateChain: chain.map { .certificate($0) },
                privateKey: .privateKey(try NIOSSLPrivateKey(bytes: Array(keyPEM.utf8), format: .pem)))
            server.certificateVerification = .none
            server.minimumTLSVersion = .tlsv12
            return try NIOSSLContext(configuration: server)
        } catch {
            throw MeshError(.tls, "field \(field): cannot build a TLS context from \(entry.cert) and \(entry.key): \(error)")
        }
    }

    private static func read(_ path: String, field: String) throws -> String {
        do {
            return try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw MeshError(.config, "field \(field): cannot read \(path) (\((error as NSError).localizedDescription))")
        }
    }

    /// Whether a certificate DNS name (`db.example.com`, or `*.example.com` for one label)
    /// covers `name` (both lower case), as RFC 6125 §6.4 matches them.
    static func covers(_ dnsName: String, _ name: String) -> Bool {
        if dnsName == name { return true }
        guard dnsName.hasPrefix("*."), let dot = name.firstIndex(of: ".") else { return false }
        return name[dot...] == dnsName.dropFirst() && name[..<dot].count > 0
    }
}

/// Host names and wildcards (`*.example.com`) mapped to values, as `tlsHosts` grants and serves
/// them. A wildcard stands for exactly one left-most label, the certificate rule of RFC 6125
/// §6.4.3: `*.example.com` covers `db.example.com`, not `example.com` and not
/// `a.db.example.com`; an exact name wins over a wildcard covering it. Keys are lower case.
struct HostNameTable<Value: Sendable>: Sendable {
    private var entries: [String: Value] = [:]

    /// The entry of an exact name or wildcard pattern (lower case), as configured.
    subscript(pattern pattern: String) -> Value? {
        get { entries[pattern] }
        set { entries[pattern] = newValue }
    }

    /// The value for `name` (any case): its exact entry, else the wildcard of its parent domain.
    func lookup(_ name: String) -> Value? {
        let lower = name.lowercased()
        guard !lower.hasPrefix("*") else { return nil }
        if let value = entries[lower] { return value }
        guard let dot = lower.firstIndex(of: "."), dot != lower.startIndex else { return nil }
        return entries["*" + lower[dot...]]
    }
}
