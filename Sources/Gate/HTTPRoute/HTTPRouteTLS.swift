import Foundation
import Logging
import NIOSSL
import Synchronization

/// TLS of an HTTPRoute listener: a certificate per hostname (chosen by the ClientHello's
/// SNI, before any TLS code runs) and TLS passthrough by SNI (`passthrough` of ugate.json and
/// the attached `TLSRoute`s, one `PassthroughTable`).
///
/// Order: a certificate for the exact name, then a passthrough entry for the exact name, then
/// the most specific wildcard — a wildcard certificate (`*.example.com`, one label) or a
/// wildcard passthrough entry (`*.example.com` covers every name below it), the longer suffix
/// winning and a certificate winning a tie — then a TLSRoute without hostnames, then the
/// default certificate; otherwise the connection is closed.
///
/// Mutable under a mutex: `update(_:)` swaps the TLSRoutes (and Gateway certificateRefs) of
/// a new set of manifests, `reloadCertificates()` re-reads changed PEM files. New connections
/// use the new state; connections already handed to NIO keep their context.
public final class HTTPRouteTLS: Sendable {
    /// What to do with a TLS connection.
    enum Choice {
        /// `loop`: the same certificate for HTTP/1.1 over TLS on the gate loops (clients that
        /// do not offer h2).
        case terminate(NIOSSLContext, loop: LoopTLSContext, certificate: String)
        case passthrough(Destination)
        case refuse
    }

    /// A certificate loaded from its files; `stamps` identify the file states it came from.
    /// Loaded twice: for NIO (BoringSSL, h2) and for the gate loops (OpenSSL, HTTP/1.1).
    struct Loaded {
        var files: CertificateFiles
        var stamps: [String: FileStamp?]
        var context: NIOSSLContext
        var loop: LoopTLSContext

        init(files: CertificateFiles, stamps: [String: FileStamp?]) throws {
            self.files = files
            self.stamps = stamps
            context = try HTTPRouteTLS.context(files)
            loop = try LoopTLSContext(files)
        }
    }

    /// Files of a host that did not load: their stamps (not retried until they change) and why.
    struct Failed {
        var files: CertificateFiles
        var stamps: [String: FileStamp?]
        var error: String
    }

    struct State {
        var config: HTTPRouteTLSConfig
        var certificates: [String: Loaded] = [:]
        /// host → files that failed to load (not retried until they change).
        var failed: [String: Failed] = [:]
        var defaultName: String?
        var passthrough = PassthroughTable()
    }

    private let state: Mutex<State>
    /// The configured listener whose Gateway manifests contribute certificates and TLSRoutes.
    private let listener: HTTPRouteListenerConfig?
    private let log: Logger

    /// Loads every certificate of `config` (PEM chain + PEM key); ALPN offers h2 and http/1.1.
    /// A certificate that cannot be loaded refuses the start.
    public convenience init(_ config: HTTPRouteTLSConfig, log: Logger = Logger(label: "ugate.httproute")) throws {
        try self.init(config: config, listener: nil, tlsRoutes: [], log: log)
    }

    /// The TLS of configured listener `listener` (nil when it has no `tls`) with the
    /// certificates of its Gateway's `certificateRefs` and its attached TLSRoutes.
    public convenience init?(listener: HTTPRouteListenerConfig, manifests: RouteManifests, log: Logger = Logger(label: "ugate.httproute")) throws {
        guard let config = try listener.tlsConfig(in: manifests) else { return nil }
        try self.init(config: config, listener: listener, tlsRoutes: listener.tlsRoutes(in: manifests), log: log)
    }

    private init(config: HTTPRouteTLSConfig, listener: HTTPRouteListenerConfig?, tlsRoutes: [TLSRouteObject], log: Logger) throws {
        var state = State(config: config)
        // ugate.json's own certificates must load; a Gateway's certificateRef that does not is
        // reported (listener status ResolvedRefs False / InvalidCertificateRef) and retried
        // when its files change, as on a reload.
        let strict = listener?.tls.map { Set(Self.files($0).keys) }
        for (host, files) in Self.files(config) {
            let stamps = Self.stamps(files)
            do {
                state.certificates[host] = try Loaded(files: files, stamps: stamps)
            } catch {
                guard let strict, !strict.contains(host) else {
                    throw GateError(.config, "httproute TLS certificate for \(host) (\(files.cert), \(files.key)): \(error)")
                }
                state.failed[host] = Failed(files: files, stamps: stamps, error: "\(error)")
                log.error(
                    "TLS certificate not loaded, no certificate for this name",
                    metadata: ["host": "\(host)", "cert": "\(files.cert)", "key": "\(files.key)", "error": "\(error)"])
            }
        }
        state.passthrough = try PassthroughTable(passthrough: config.passthrough, routes: tlsRoutes)
        if let name = config.defaultCertificate, state.certificates[name.lowercased()] == nil, state.failed[name.lowercased()] == nil {
            throw GateError(.config, "httproute TLS defaultCertificate \(name) names no certificate")
        }
        state.defaultName = config.defaultCertificate?.lowercased()
        self.state = Mutex(state)
        self.listener = listener
        self.log = log
    }

    /// Applies a new set of manifests: the listener's TLSRoutes and its Gateway's
    /// certificateRefs (then reloads what changed). An error (a certificateRef without
    /// `certificateDir`) is logged and the previous state stays.
    public func update(_ manifests: RouteManifests) {
        guard let listener else { return }
        do {
            guard let config = try listener.tlsConfig(in: manifests) else { return }
            let table = try PassthroughTable(passthrough: config.passthrough, routes: listener.tlsRoutes(in: manifests))
            state.withLock {
                $0.config = config
                $0.passthrough = table
            }
            reloadCertificates()
        } catch {
            log.error("TLS routes not updated, keeping the previous ones", metadata: ["listener": "\(listener.name)", "error": "\(error)"])
        }
    }

    /// Re-reads every certificate whose files changed (their `FileStamp`: one `stat` per file,
    /// no read while unchanged) or appeared (a new pair in `certificateDir`). A pair that does not load is logged with host and
    /// files, and the previous certificate for that host stays in use; it is tried again
    /// once its files change. Returns the hosts whose certificate was replaced or added.
    @discardableResult
    public func reloadCertificates() -> [String] {
        let config = state.withLock { $0.config }
        let current = Self.files(config)
        var loaded: [String: Loaded] = [:]
        var failed: [String: Failed] = [:]
        let known = state.withLock { ($0.certificates, $0.failed) }
        for (host, files) in current {
            let stamps = Self.stamps(files)
            if let old = known.1[host] {
                if FileStamp.same(stamps, old.stamps) { continue }
            } else if let old = known.0[host], FileStamp.same(stamps, old.stamps) {
                continue
            }
            do {
                loaded[host] = try Loaded(files: files, stamps: stamps)
                log.info("TLS certificate loaded", metadata: ["host": "\(host)", "cert": "\(files.cert)"])
            } catch {
                failed[host] = Failed(files: files, stamps: stamps, error: "\(error)")
                let keeping = known.0[host] == nil ? "no certificate for this name" : "keeping the previous certificate"
                log.error(
                    "TLS certificate not reloaded, \(keeping)",
                    metadata: ["host": "\(host)", "cert": "\(files.cert)", "key": "\(files.key)", "error": "\(error)"])
            }
        }
        state.withLock { state in
            state.certificates.merge(loaded) { _, new in new }
            // Names whose files are gone from the configuration (a Gateway listener removed) go too.
            state.certificates = state.certificates.filter { current[$0.key] != nil }
            state.failed = state.failed.filter { current[$0.key] != nil && loaded[$0.key] == nil }.merging(failed) { _, new in new }
            state.defaultName = state.config.defaultCertificate?.lowercased()
        }
        return loaded.keys.sorted()
    }

    /// Whether a certificate from `files` is being served (`loaded`; the previous version when
    /// the current files do not load) and why the current files do not load (`error`), for
    /// the Gateway listener status.
    func certificateState(_ files: CertificateFiles) -> (loaded: Bool, error: String?) {
        state.withLock { state in
            (state.certificates.values.contains { $0.files == files }, state.failed.values.first { $0.files == files }?.error)
        }
    }

    func choose(serverName: String?) -> Choice {
        let name = serverName?.lowercased() ?? ""
        let state = self.state.withLock { $0 }
        if let loaded = state.certificates[name] { return .terminate(loaded.context, loop: loaded.loop, certificate: name) }
        if let entry = state.passthrough.exact[name] { return passthrough(entry) }
        var certificate: (String, Loaded)?
        if let dot = name.firstIndex(of: "."), dot != name.startIndex {
            let wildcard = "*" + name[dot...]
            if let loaded = state.certificates[wildcard] { certificate = (wildcard, loaded) }
        }
        let wildcardEntry = state.passthrough.wildcard(for: name)
        if let certificate, certificate.0.count >= (wildcardEntry?.host.count ?? 0) {
            return .terminate(certificate.1.context, loop: certificate.1.loop, certificate: certificate.0)
        }
        if let wildcardEntry { return passthrough(wildcardEntry) }
        if let entry = state.passthrough.catchAll { return passthrough(entry) }
        if let defaultName = state.defaultName, let loaded = state.certificates[defaultName] {
            return .terminate(loaded.context, loop: loaded.loop, certificate: defaultName)
        }
        return .refuse
    }

    private func passthrough(_ entry: PassthroughTable.Entry) -> Choice {
        var generator = SystemRandomNumberGenerator()
        guard let backend = RouteTable.pick(entry.backends, using: &generator) else {
            log.info("TLS passthrough route has no backend with a weight above 0", metadata: ["route": "\(entry.source)"])
            return .refuse
        }
        if let reason = backend.refused {
            log.info("TLS passthrough backend refused", metadata: ["route": "\(entry.source)", "error": "\(reason)"])
            return .refuse
        }
        return .passthrough(backend.destination)
    }

    /// The certificate files of `config`: `certificates`, then the pairs of `certificateDir`
    /// (`<host>.crt` + `<host>.key`, a leading `_.` standing for `*.`), keyed by lowercased host.
    static func files(_ config: HTTPRouteTLSConfig) -> [String: CertificateFiles] {
        var files: [String: CertificateFiles] = [:]
        for (host, pair) in config.certificates { files[host.lowercased()] = pair }
        if let dir = config.certificateDir {
            let names = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
            for name in names.sorted() where name.hasSuffix(".crt") {
                let base = String(name.dropLast(4))
                let host = (base.hasPrefix("_.") ? "*." + base.dropFirst(2) : base).lowercased()
                guard files[host] == nil else { continue }
                files[host] = CertificateFiles(cert: dir + "/" + name, key: dir + "/" + base + ".key")
            }
        }
        return files
    }

    /// The `FileStamp`s of both files, by path.
    static func stamps(_ files: CertificateFiles) -> [String: FileStamp?] {
        [files.cert: FileStamp(files.cert), files.key: FileStamp(files.key)]
    }

    static func context(_ files: CertificateFiles) throws -> NIOSSLContext {
        let chain = try NIOSSLCertificate.fromPEMFile(files.cert).map { NIOSSLCertificateSource.certificate($0) }
        guard !chain.isEmpty else { throw GateError(.config, "\(files.cert) holds no PEM certificate") }
        let key = try NIOSSLPrivateKey(file: files.key, format: .pem)
        var tls = TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: .privateKey(key))
        tls.applicationProtocols = ["h2", "http/1.1"]
        tls.minimumTLSVersion = .tlsv12
        return try NIOSSLContext(configuration: tls)
    }
}

/// TLS passthrough by SNI as a value: the `passthrough` entries of ugate.json and the
/// hostnames of TLSRoutes, each → weighted backends.
///
/// An exact name wins over a wildcard; among wildcards (`*.example.com` covers every name
/// below `example.com`, not the apex) the longest suffix wins; a TLSRoute without hostnames
/// catches every other SNI. For the same hostname a ugate.json entry wins over TLSRoutes, and
/// among TLSRoutes the oldest (`creationTimestamp`), then `namespace/name` alphabetically
/// (the Gateway API's conflict resolution).
struct PassthroughTable: Sendable {
    struct Entry: Sendable {
        /// The hostname as written (`db.example.com`, `*.example.com`, `""` for catch-all).
        var host: String
        var backends: [RouteBackend]
        /// `ugate.json` or `TLSRoute namespace/name`.
        var source: String
    }

    var exact: [String: Entry] = [:]
    /// Sorted by suffix length, longest first.
    var wildcards: [Entry] = []
    var catchAll: Entry?

    init() {}

    init(passthrough: [String: String], routes: [TLSRouteObject]) throws {
        var all: [String: Entry] = [:]
        for (host, target) in passthrough {
            guard let destination = try? Destination(parsing: target) else {
                throw GateError(.config, "httproute TLS passthrough[\"\(host)\"]: \(target) is not host:port")
            }
            all[host.lowercased()] = Entry(
                host: host.lowercased(), backends: [RouteBackend(name: target, destination: destination, weight: 1)], source: "ugate.json")
        }
        let ordered = routes.sorted {
            let a = $0.created ?? .distantFuture, b = $1.created ?? .distantFuture
            return a != b ? a < b : $0.key < $1.key
        }
        for route in ordered {
            for host in route.hostnames.isEmpty ? [""] : route.hostnames where all[host] == nil {
                all[host] = Entry(host: host, backends: route.backends, source: "TLSRoute \(route.key)")
            }
        }
        for (host, entry) in all {
            if host.isEmpty {
                catchAll = entry
            } else if host.hasPrefix("*.") {
                wildcards.append(entry)
            } else {
                exact[host] = entry
            }
        }
        wildcards.sort { $0.host.count != $1.host.count ? $0.host.count > $1.host.count : $0.host < $1.host }
    }

    /// The most specific wildcard entry covering `name`.
    func wildcard(for name: String) -> Entry? {
        wildcards.first { RouteHostnames.covers($0.host, name) }
    }

    /// The entry for `name` (exact, wildcard, catch-all), for tests and status.
    func lookup(_ name: String) -> Entry? {
        exact[name] ?? wildcard(for: name) ?? catchAll
    }
}
