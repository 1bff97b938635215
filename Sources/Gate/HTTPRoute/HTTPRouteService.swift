import Foundation
import Logging
import NIOPosix

/// The `httproute` section of ugate.json: which ports serve the HTTPRoute gateway, where the
/// manifests are, and the TLS certificates.
///
/// ```json
/// "httproute": {
///   "manifests": "/etc/ugate/routes",
///   "services": {"default/store-v1": "10.0.0.5:8080"},
///   "listeners": [
///     {"name": "http", "port": 80},
///     {"name": "https", "port": 443, "tls": {"certificateDir": "/etc/ugate/certs",
///      "passthrough": {"db.example.com": "10.0.0.9:443"}}}
///   ]
/// }
/// ```
public struct HTTPRouteConfig: Codable, Sendable, Equatable {
    /// Folder of HTTPRoute / Gateway YAML manifests (watched; changes apply without
    /// dropping connections).
    public var manifests: String
    /// Backend name (`ns/name` or `name`) → `host` or `host:port`.
    public var services: [String: String] = [:]
    public var listeners: [HTTPRouteListenerConfig] = []
    /// Seconds between checks of the manifest folder.
    public var reloadInterval: Double = 1
    /// Seconds for a request whose rule has no `timeouts.request`.
    public var requestTimeout: Double = 30
    /// Seconds a kept-alive HTTP/1.1 client connection may stay idle between requests.
    public var keepAliveTimeout: Double = 60
    /// Seconds an HTTP/2 client connection (h2c or h2) may stay without open streams before
    /// it is closed with GOAWAY.
    public var http2IdleTimeout: Double = 60
    /// Seconds to connect to a backend (directly or through a mesh upstream) before trying
    /// the rule's next backend (503 when none is left); capped by the rule's deadline.
    public var connectTimeout: Double = 10
    /// Largest request body (bytes) copied to RequestMirror backends; a request with a larger
    /// body is served but not mirrored (counted in `ugate_httproute_mirror_skipped_total`).
    public var mirrorBodyLimit: Int = 1 << 20

    public init(manifests: String, services: [String: String] = [:], listeners: [HTTPRouteListenerConfig] = []) {
        self.manifests = manifests
        self.services = services
        self.listeners = listeners
    }

    private enum CodingKeys: String, CodingKey, CaseIterable {
        case manifests, services, listeners, reloadInterval, requestTimeout, keepAliveTimeout, http2IdleTimeout, connectTimeout, mirrorBodyLimit
    }

    public init(from decoder: any Decoder) throws {
        try ConfigKey.rejectUnknown(decoder, CodingKeys.allCases.map(\.rawValue))
        let c = try decoder.container(keyedBy: CodingKeys.self)
        manifests = try c.decode(String.self, forKey: .manifests)
        services = try c.decodeIfPresent([String: String].self, forKey: .services) ?? [:]
        listeners = try c.decodeIfPresent([HTTPRouteListenerConfig].self, forKey: .listeners) ?? []
        reloadInterval = try c.decodeIfPresent(Double.self, forKey: .reloadInterval) ?? 1
        requestTimeout = try c.decodeIfPresent(Double.self, forKey: .requestTimeout) ?? 30
        keepAliveTimeout = try c.decodeIfPresent(Double.self, forKey: .keepAliveTimeout) ?? 60
        http2IdleTimeout = try c.decodeIfPresent(Double.self, forKey: .http2IdleTimeout) ?? 60
        connectTimeout = try c.decodeIfPresent(Double.self, forKey: .connectTimeout) ?? 10
        mirrorBodyLimit = try c.decodeIfPresent(Int.self, forKey: .mirrorBodyLimit) ?? 1 << 20
    }
}

/// One port of the gateway. Plain listeners serve HTTP/1.1 and h2c (prior knowledge);
/// TLS listeners terminate TLS by SNI (HTTP/2 or HTTP/1.1 by ALPN) or pass it through.
public struct HTTPRouteListenerConfig: Codable, Sendable, Equatable {
    /// Listener name: a route's `parentRefs[].sectionName` selects it.
    public var name: String
    /// Bind address (default: the config's `bind`).
    public var host: String?
    /// Port (0: ephemeral).
    public var port: Int
    /// `namespace/name` of the Gateway this listener belongs to: routes attach when their
    /// `parentRefs` name it (routes without parentRefs attach everywhere); the Gateway
    /// manifest's listener of the same `name`, when present, adds its hostname and
    /// `allowedRoutes` (see `routes(in:)`). Without it every route attaches.
    public var gateway: String?
    public var tls: HTTPRouteTLSConfig?

    public init(name: String, host: String? = nil, port: Int, gateway: String? = nil, tls: HTTPRouteTLSConfig? = nil) {
        self.name = name
        self.host = host
        self.port = port
        self.gateway = gateway
        self.tls = tls
    }

    private enum CodingKeys: String, CodingKey, CaseIterable { case name, host, port, gateway, tls }

    public init(from decoder: any Decoder) throws {
        try ConfigKey.rejectUnknown(decoder, CodingKeys.allCases.map(\.rawValue))
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        host = try c.decodeIfPresent(String.self, forKey: .host)
        port = try c.decode(Int.self, forKey: .port)
        gateway = try c.decodeIfPresent(String.self, forKey: .gateway)
        tls = try c.decodeIfPresent(HTTPRouteTLSConfig.self, forKey: .tls)
    }

}

/// Certificates and passthrough of a TLS listener.
public struct HTTPRouteTLSConfig: Codable, Sendable, Equatable {
    /// Hostname (or `*.domain`) → PEM certificate chain and key files.
    public var certificates: [String: CertificateFiles] = [:]
    /// Folder of `<hostname>.crt` + `<hostname>.key` pairs (`_.example.com.crt` is
    /// `*.example.com`); entries of `certificates` win.
    public var certificateDir: String?
    /// Hostname of the certificate for clients whose SNI matches nothing (nil: close them).
    public var defaultCertificate: String?
    /// SNI hostname → `host:port`: such TLS connections are relayed untouched.
    public var passthrough: [String: String] = [:]

    public init(
        certificates: [String: CertificateFiles] = [:], certificateDir: String? = nil, defaultCertificate: String? = nil,
        passthrough: [String: String] = [:]
    ) {
        self.certificates = certificates
        self.certificateDir = certificateDir
        self.defaultCertificate = defaultCertificate
        self.passthrough = passthrough
    }

    private enum CodingKeys: String, CodingKey, CaseIterable { case certificates, certificateDir, defaultCertificate, passthrough }

    public init(from decoder: any Decoder) throws {
        try ConfigKey.rejectUnknown(decoder, CodingKeys.allCases.map(\.rawValue))
        let c = try decoder.container(keyedBy: CodingKeys.self)
        certificates = try c.decodeIfPresent([String: CertificateFiles].self, forKey: .certificates) ?? [:]
        certificateDir = try c.decodeIfPresent(String.self, forKey: .certificateDir)
        defaultCertificate = try c.decodeIfPresent(String.self, forKey: .defaultCertificate)
        passthrough = try c.decodeIfPresent([String: String].self, forKey: .passthrough) ?? [:]
    }
}

/// A PEM certificate chain file and its PEM private key file.
public struct CertificateFiles: Codable, Sendable, Equatable {
    public var cert: String
    public var key: String

    public init(cert: String, key: String) {
        self.cert = cert
        self.key = key
    }
}

/// The HTTPRoute gateway of a node: one `HTTPGateway` per configured listener, all fed from
/// one manifest folder that is watched and re-applied without dropping connections.
public final class HTTPRouteService: Sendable {
    /// Listener name and bound address (with the real port).
    public let bound: [(name: String, address: SocketAddress, tls: Bool)]
    private let gateways: [HTTPGateway]
    private let reloader: HTTPRouteReloader
    /// The manifests in force and the configured listeners, for `status()`.
    private let current: RouteManifestsBox
    private let listeners: [HTTPRouteListenerConfig]

    /// Loads the manifests (an invalid folder refuses to start) and binds every listener.
    public init(
        config: HTTPRouteConfig, bind: String, loops: GateLoopGroup, log: Logger = Logger(label: "ugate.httproute"),
        accessLog: Logger = Logger(label: "ugate.httproute.access"), router: Router? = nil
    ) throws {
        let loader = HTTPRouteLoader(services: config.services)
        let manifests = try loader.load(directory: config.manifests)
        var gateways: [HTTPGateway] = []
        var tlsByListener: [HTTPRouteTLS?] = []
        var bound: [(name: String, address: SocketAddress, tls: Bool)] = []
        do {
            for listener in config.listeners {
                guard (0...65535).contains(listener.port) else {
                    throw GateError(.config, "httproute listener \(listener.name): port \(listener.port) out of range")
                }
                let tls = try HTTPRouteTLS(listener: listener, manifests: manifests, log: log)
                let gateway = try HTTPGateway(
                    table: RouteTable(routes: listener.routes(in: manifests)), host: listener.host ?? bind,
                    port: UInt16(listener.port), loops: loops, defaultTimeout: config.requestTimeout,
                    keepAliveTimeout: config.keepAliveTimeout, http2IdleTimeout: config.http2IdleTimeout, connectTimeout: config.connectTimeout,
                    mirrorBodyLimit: config.mirrorBodyLimit, accessLog: accessLog, log: log, tls: tls, name: listener.name, router: router)
                gateways.append(gateway)
                tlsByListener.append(tls)
                bound.append((listener.name, gateway.address, listener.tls != nil))
            }
        } catch {
            gateways.forEach { $0.stop() }
            throw error
        }
        let listeners = config.listeners
        let serving = gateways
        let tlsSet = tlsByListener
        let current = RouteManifestsBox(manifests)
        reloader = HTTPRouteReloader(
            directory: config.manifests, loader: loader, interval: config.reloadInterval, log: log,
            tick: { tlsSet.forEach { $0?.reloadCertificates() } }
        ) { manifests in
            for (index, (listener, gateway)) in zip(listeners, serving).enumerated() {
                gateway.update(RouteTable(routes: listener.routes(in: manifests)))
                tlsSet[index]?.update(manifests)
            }
            current.manifests = manifests
        }
        self.current = current
        self.listeners = listeners
        self.gateways = gateways
        self.bound = bound
    }

    /// The gateway of a node config's `httproute` section; nil when it has none.
    /// - Parameter router: the node's route table, through which backends are dialled (so a
    ///   backend routed to `mesh:<peer>` is reached through that peer).
    public static func start(_ config: GateConfig, loops: GateLoopGroup, router: Router? = nil) throws -> HTTPRouteService? {
        guard let section = config.httproute else { return nil }
        do {
            return try HTTPRouteService(config: section, bind: config.bind, loops: loops, router: router)
        } catch {
            throw GateError(.config, "httproute: \(error)")
        }
    }

    /// The Gateway API status (Accepted, ResolvedRefs) of every route in force.
    public func status() -> [RouteStatus] {
        RouteStatus.compute(current.manifests, listeners: listeners)
    }

    /// Stops watching and closes the listening sockets.
    public func stop() {
        reloader.stop()
        gateways.forEach { $0.stop() }
    }
}
