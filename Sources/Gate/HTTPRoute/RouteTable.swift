import Foundation

/// What the route table needs from a request.
public struct RouteRequest: Sendable, Hashable {
    public var method: String
    /// The host without port, lowercased.
    public var host: String
    /// The port the client addressed (from Host), nil when absent.
    public var port: Int?
    /// The path without query.
    public var path: String
    /// The raw query (after `?`), nil when absent.
    public var query: String? {
        get { hasQuery ? queryText : nil }
        set {
            queryText = newValue ?? ""
            hasQuery = newValue != nil
        }
    }
    /// `query` as stored: with a stored `String?` every initializer of this struct built it in
    /// place and then copied it out whole (an outlined copy and destroy, a retain and a
    /// release per field: about 260 instructions per HTTP/1.1 request); a `String` and a flag
    /// do not. "" while `hasQuery` is false, so the synthesized `==` and `hash` are `query`'s.
    private var queryText: String
    private var hasQuery: Bool
    public var headers: [HTTPField]

    public init(method: String, host: String, port: Int? = nil, path: String, query: String? = nil, headers: [HTTPField] = []) {
        self.method = method
        self.host = host.lowercased()
        self.port = port
        self.path = path
        queryText = query ?? ""
        hasQuery = query != nil
        self.headers = headers
    }

    /// Builds the request view of a parsed head (origin-form target; Host for the host).
    public init(_ head: HTTPRequestHead) {
        self.init(method: head.method, target: head.target, host: head.values("host").first ?? "", headers: head.headers)
    }

    /// The request view of a method, an origin-form target, the first `Host` value and the
    /// fields (the gateway's data path finds `Host` while it collects the fields).
    init(method: String, target: String, host: String, headers: [HTTPField]) {
        self.init(method: method, target: target, authority: Authority(host), headers: headers)
    }

    /// The same with the `Host` value already split (`Authority`; the HTTP/1.1 decoder keeps
    /// the previous request's). Runs for every request: the target is searched in its UTF-8
    /// bytes (a `Character` search segments graphemes).
    init(method: String, target: String, authority: Authority, headers: [HTTPField]) {
        self.method = method
        self.headers = headers
        (path, queryText, hasQuery) = utf8Bytes(of: target) { bytes in
            guard let question = bytes.firstIndex(of: UInt8(ascii: "?")) else { return (target, "", false) }
            return (String(decoding: UnsafeBufferPointer(rebasing: bytes[..<question]), as: UTF8.self),
                    String(decoding: UnsafeBufferPointer(rebasing: bytes[(question + 1)...]), as: UTF8.self), true)
        }
        host = authority.name
        port = authority.port
    }

    /// A `Host` value as the route table reads it: the host without port, lower-cased, and
    /// the port.
    struct Authority {
        var name: String
        var port: Int?

        init(name: String, port: Int?) {
            self.name = name
            self.port = port
        }

        /// `host:port` unless the host ends in `]` (an IPv6 literal without a port); the port
        /// as `Int(_:)` reads it (optional sign, decimal digits, no overflow). Searched in the
        /// UTF-8 bytes (`String` indices and `Int(Substring)` went through generic index
        /// alignment and radix parsing); lower-cased only when it has upper-case or non-ASCII
        /// bytes.
        init(_ host: String) {
            let (name, port, lower): (String, Int?, Bool) = utf8Bytes(of: host) { bytes in
                var end = bytes.count
                var port: Int?
                if let last = bytes.last, last != UInt8(ascii: "]"), let colon = bytes.lastIndex(of: UInt8(ascii: ":")),
                   let p = RouteRequest.decimal(UnsafeBufferPointer(rebasing: bytes[(colon + 1)...])) {
                    end = colon
                    port = p
                }
                let lower = bytes[..<end].contains { ($0 >= 0x41 && $0 <= 0x5A) || $0 >= 0x80 }
                let name = end == bytes.count ? host : String(decoding: UnsafeBufferPointer(rebasing: bytes[..<end]), as: UTF8.self)
                return (name, port, lower)
            }
            self.name = lower ? name.lowercased() : name
            self.port = port
        }
    }

    /// A decimal integer as `Int(_:)` parses it: an optional `+` or `-`, then at least one
    /// digit; nil on anything else or overflow.
    fileprivate static func decimal(_ bytes: UnsafeBufferPointer<UInt8>) -> Int? {
        var index = 0
        var negative = false
        if let first = bytes.first, first == UInt8(ascii: "+") || first == UInt8(ascii: "-") {
            negative = first == UInt8(ascii: "-")
            index = 1
        }
        guard index < bytes.count else { return nil }
        var value = 0
        while index < bytes.count {
            let digit = bytes[index] &- UInt8(ascii: "0")
            guard digit < 10 else { return nil }
            let (times, overflow1) = value.multipliedReportingOverflow(by: 10)
            let (next, overflow2) = negative ? times.subtractingReportingOverflow(Int(digit)) : times.addingReportingOverflow(Int(digit))
            guard !overflow1, !overflow2 else { return nil }
            value = next
            index += 1
        }
        return value
    }

    var queryParams: [(String, String)] {
        guard let query, !query.isEmpty else { return [] }
        return query.split(separator: "&").map { pair in
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            return (String(parts[0]), parts.count > 1 ? String(parts[1]) : "")
        }
    }
}

/// The rule a request matched.
public struct RouteSelection: Sendable, Hashable {
    public var route: HTTPRouteObject
    public var ruleIndex: Int
    public var match: RouteMatch
    public var rule: RouteRule { route.rules[ruleIndex] }
    /// `namespace/name` and the rule index, for logs: `default/store#1` (made once per table
    /// entry, not per request).
    public var label: String
}

/// The Gateway API matching of a set of HTTPRoutes, as a value.
///
/// Host first: among the routes whose `hostnames` match the request's host, only those with
/// the most specific hostname are considered (most characters of a matching non-wildcard
/// hostname, then most characters of a matching hostname; a route without hostnames matches
/// every host least specifically). Then across their rules' matches, in this order:
/// `Exact` path, longest `PathPrefix`, `RegularExpression` path; a method match; most header
/// matches; most query-param matches; oldest route (`creationTimestamp`); `namespace/name`
/// alphabetically; first rule, first match within a route. The first match that holds wins;
/// none is a 404.
public struct RouteTable: Sendable {
    struct Entry: Sendable {
        var route: Int
        var rule: Int
        /// What a request matching here is forwarded with (its `route` is the entry's label,
        /// its `match` the entry's match).
        var forward: ForwardRule
        var label: String { forward.route }
        var match: RouteMatch { forward.match }
    }

    public let routes: [HTTPRouteObject]
    let entries: [Entry]

    public init(routes: [HTTPRouteObject]) {
        self.routes = routes
        var entries: [Entry] = []
        for (r, route) in routes.enumerated() {
            for (i, rule) in route.rules.enumerated() {
                for match in rule.matches {
                    entries.append(Entry(route: r, rule: i, forward: ForwardRule(route: "\(route.key)#\(i)", rule: rule, match: match)))
                }
            }
        }
        func key(_ e: Entry) -> (Int, Int, Int, Int, Int) {
            let (rank, length): (Int, Int) = switch e.match.path {
            case .exact(let p): (0, -p.count)
            case .prefix(let p): (1, -Self.trimmedPrefix(p).count)
            case .regularExpression: (2, 0)
            }
            return (rank, length, e.match.method == nil ? 1 : 0, -e.match.headers.count, -e.match.queryParams.count)
        }
        entries.sort { a, b in
            let ka = key(a), kb = key(b)
            if ka != kb { return ka < kb }
            let ra = routes[a.route], rb = routes[b.route]
            let ca = ra.created ?? .distantFuture, cb = rb.created ?? .distantFuture
            if ca != cb { return ca < cb }
            if ra.key != rb.key { return ra.key < rb.key }
            return (a.rule, a.route) < (b.rule, b.route)
        }
        self.entries = entries
    }

    /// The hostname specificity of `route` for `host`, nil when none of its hostnames match.
    /// Runs for every route on every request: when the name and the host are ASCII (the usual
    /// DNS names) they are measured and compared on their UTF-8 bytes — `String.count` walks
    /// the grapheme clusters and `hasSuffix` compares characters; for ASCII the results are
    /// the same.
    static func hostScore(_ hostnames: [String], _ host: String) -> (Int, Int)? {
        if hostnames.isEmpty { return (0, 0) }
        var best: (Int, Int)?
        // Asked only for a wildcard name: an exact name is compared as a whole and measured
        // only when it matches (two ASCII checks per route and request were about 150
        // instructions).
        var asciiHost: Bool?
        for index in hostnames.indices {
            let name = hostnames[index]
            var score: (Int, Int)?
            // The first two bytes read directly (`utf8.starts(with:)` was generic, ~140 instructions).
            if utf8Bytes(of: name, { $0.count >= 2 && $0[0] == UInt8(ascii: "*") && $0[1] == UInt8(ascii: ".") }) {
                if asciiHost == nil { asciiHost = isASCII(host) }
                let ascii = asciiHost! && isASCII(name)
                let length = ascii ? name.utf8.count : name.count
                let matched = ascii
                    ? host.utf8.count > length - 1 && host.utf8.reversed().starts(with: name.utf8.dropFirst().reversed())
                    : host.hasSuffix(name.dropFirst()) && host.count > length - 1
                if matched { score = (0, length) }
            } else if name == host {
                let length = isASCII(name) ? name.utf8.count : name.count
                score = (length, length)
            }
            if let s = score, best == nil || s > best! { best = s }
        }
        return best
    }

    /// Whether every byte of `text` is ASCII: eight bytes at a time, then the rest (asked
    /// for the host and every route hostname on every request).
    private static func isASCII(_ text: String) -> Bool {
        utf8Bytes(of: text) { bytes in
            var index = 0
            if let base = bytes.baseAddress {
                while index + 8 <= bytes.count {
                    if UnsafeRawPointer(base + index).loadUnaligned(as: UInt64.self) & 0x8080_8080_8080_8080 != 0 { return false }
                    index += 8
                }
            }
            while index < bytes.count {
                if bytes[index] >= 0x80 { return false }
                index += 1
            }
            return true
        }
    }

    /// A `PathPrefix` value without its trailing `/` (`/` itself stays). Asked per request:
    /// its length and last byte are read from the UTF-8 bytes (`count` walked the grapheme
    /// clusters); a prefix starts with `/`, so neither differs from the `Character` view.
    static func trimmedPrefix(_ prefix: String) -> String {
        prefix.utf8.count > 1 && prefix.utf8.last == UInt8(ascii: "/") ? String(prefix.dropLast()) : prefix
    }

    /// Whether `path` matches `match.path`.
    static func pathMatches(_ match: PathMatch, _ path: String) -> Bool {
        switch match {
        case .exact(let p): return path == p
        case .prefix(let raw):
            let p = trimmedPrefix(raw)
            return p == "/" || path == p || path.hasPrefix(p + "/")
        case .regularExpression(let regex): return regex.matches(path)
        }
    }

    static func matches(_ match: RouteMatch, _ request: RouteRequest) -> Bool {
        guard pathMatches(match.path, request.path) else { return false }
        if let method = match.method, method != request.method { return false }
        for header in match.headers {
            let values = request.headers.filter { $0.name.lowercased() == header.name }.map(\.value)
            guard !values.isEmpty, header.matches(values.joined(separator: ",")) else { return false }
        }
        if !match.queryParams.isEmpty {
            let params = request.queryParams
            for param in match.queryParams {
                // The first value of a repeated parameter counts (Gateway API: implementation-specific).
                guard let value = params.first(where: { $0.0 == param.name })?.1, param.matches(value) else { return false }
            }
        }
        return true
    }

    /// The rule match for `request`, nil for 404.
    public func select(_ request: RouteRequest) -> RouteSelection? {
        guard let index = selectedEntry(request) else { return nil }
        let entry = entries[index]
        return RouteSelection(route: routes[entry.route], ruleIndex: entry.rule, match: entry.match, label: entry.label)
    }

    /// The index in `entries` of the rule match for `request`, nil for 404. `decide` reads the
    /// route's rule, the match and the label there in place: a `RouteSelection` holds a copy
    /// of the whole route and its match (about 16 retains per request).
    func selectedEntry(_ request: RouteRequest) -> Int? {
        var best: (Int, Int)?
        // The routes with the best host score: a bit mask for up to 64 routes (no allocation
        // per request), a set beyond.
        var mask: UInt64 = 0
        var candidates = Set<Int>()
        let small = routes.count <= 64
        // By index: iterating the arrays would copy every route and entry (a retain per field).
        for index in routes.indices {
            guard let score = Self.hostScore(routes[index].hostnames, request.host) else { continue }
            if best == nil || score > best! {
                best = score
                if small { mask = 1 << index } else { candidates = [index] }
            } else if score == best! {
                if small { mask |= 1 << index } else { candidates.insert(index) }
            }
        }
        for index in entries.indices {
            let route = entries[index].route
            let candidate = small ? mask & (1 << route) != 0 : candidates.contains(route)
            // Through the entry's `ForwardRule` (a `let` of a final class, read in place): the
            // entry's own copy of the match was copied out of the array and destroyed per
            // request (outlined copy and destroy of `RouteMatch`, about 250 instructions).
            if candidate && entries[index].forward.matches(request) { return index }
        }
        return nil
    }
}
