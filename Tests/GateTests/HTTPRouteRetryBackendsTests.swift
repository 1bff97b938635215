import Foundation
import Glibc
import XCTest

@testable import Gate

/// A `RandomNumberGenerator` that always returns `value`: 1 makes every weighted choice take the
/// first eligible candidate and every backoff its minimum, `UInt64.max` the last candidate and
/// the longest backoff. (Not 0: the standard library's bounded draw rejects a 0 for most bounds
/// and would draw again forever.)
struct ConstantRandom: RandomNumberGenerator {
    var value: UInt64
    mutating func next() -> UInt64 { value }
}

/// Retries across the rule's backends: the pure `RetryRule` (which backend, how long), and real
/// sockets where the first backend answers 503, resets or refuses the connection and the retried
/// request lands on the second — over HTTP/1.1 and h2c with curl.
extension HTTPRouteRetryTests {
    // MARK: - The pure decision

    /// Which candidate a retry goes to: untried ones first by weight, all of them once every one
    /// was tried, weight 0 never.
    func testPickTable() {
        let cases: [(name: String, weights: [Int], tried: UInt64, untriedOnly: Bool, random: UInt64, expected: Int?)] = [
            ("two backends, first tried: the other", [1_000_000, 1], 0b01, false, 1, 1),
            ("two backends, first tried, high draw: still the other", [1_000_000, 1], 0b01, false, .max, 1),
            ("only backend: falls back to it", [5], 0b1, false, .max, 0),
            ("only backend, untried only: none", [5], 0b1, true, 1, nil),
            ("three, first tried, low draw: second", [1, 2, 3], 0b001, false, 1, 1),
            ("three, first tried, high draw: third", [1, 2, 3], 0b001, false, .max, 2),
            ("three, two tried: the last", [1, 2, 3], 0b101, false, 1, 1),
            ("all tried, low draw: first by weight", [1, 2, 3], 0b111, false, 1, 0),
            ("all tried, high draw: last by weight", [1, 2, 3], 0b111, false, .max, 2),
            ("all tried, untried only: none (connect failures stop)", [1, 2, 3], 0b111, true, 1, nil),
            ("weight 0 never chosen", [1, 0, 1], 0b001, false, 1, 2),
            ("weight 0 never chosen, all tried", [0, 0, 4], 0b100, false, 1, 2),
        ]
        for c in cases {
            var random = ConstantRandom(value: c.random)
            XCTAssertEqual(RetryRule.pick(c.weights, excluding: c.tried, untriedOnly: c.untriedOnly, using: &random), c.expected, c.name)
        }
        // Untried candidates keep their relative weights (previous-hosts predicate, Envoy).
        var random = SplitMix64(seed: 7)
        var counts = [0, 0, 0]
        for _ in 0..<30_000 { counts[RetryRule.pick([9, 1, 3], excluding: 0b001, untriedOnly: false, using: &random)!] += 1 }
        XCTAssertEqual(counts[0], 0)
        // 1 : 3 → 7,500 and 22,500 expected; 6 standard deviations (75) either way.
        XCTAssertEqual(Double(counts[1]), 7_500, accuracy: 450, "\(counts)")
        XCTAssertEqual(Double(counts[2]), 22_500, accuracy: 450, "\(counts)")
    }

    /// The backoff: never below `backoff`, growing exponentially, capped at 10 × backoff, random
    /// in between (full jitter).
    func testBackoffTable() {
        let cases: [(retry: Int, base: Double, random: UInt64, expected: Double)] = [
            (1, 0.1, 1, 0.1), (1, 0.1, .max, 0.2),
            (2, 0.1, 1, 0.1), (2, 0.1, .max, 0.4),
            (3, 0.1, .max, 0.8),
            (4, 0.1, .max, 1.0), (9, 0.1, .max, 1.0), (1000, 0.1, .max, 1.0),
            (4, 0.1, 1, 0.1),
            (3, 0, .max, 0),
        ]
        for c in cases {
            var random = ConstantRandom(value: c.random)
            XCTAssertEqual(RetryRule.backoff(c.base, retry: c.retry, using: &random), c.expected, accuracy: 1e-9, "retry \(c.retry) base \(c.base)")
        }
        var random = SplitMix64(seed: 1)
        for retry in 1...6 {
            let upper = 0.05 * min(Double(1 << retry), 10)
            let delays = (0..<2000).map { _ in RetryRule.backoff(0.05, retry: retry, using: &random) }
            XCTAssertTrue(delays.allSatisfy { $0 >= 0.05 && $0 <= upper + 1e-12 }, "retry \(retry)")
            // Spread over the whole range, not a fixed wait.
            XCTAssertLessThan(delays.min()!, 0.05 + (upper - 0.05) * 0.05, "retry \(retry)")
            XCTAssertGreaterThan(delays.max()!, upper - (upper - 0.05) * 0.05, "retry \(retry)")
        }
    }

    /// The decisions in sequence: where each try goes, how long it waits, when it gives up.
    func testRetryRuleDecisionTable() {
        let policy = RetryPolicy(attempts: 2, codes: [502, 503], backoff: 0.1)
        typealias D = RetryRule.Decision
        enum Event { case connectFailed, lost(reused: Bool), status(Int) }
        let cases: [(name: String, policy: RetryPolicy?, method: String, weights: [Int], events: [(Event, D)])] = [
            ("GET, no policy: one stale retry to the other backend, then 502", nil, "GET", [1, 1],
             [(.lost(reused: true), .retry(delay: 0, fresh: true, backend: 1)), (.lost(reused: true), .giveUp)]),
            ("GET, no policy, one backend: stale retry to the same", nil, "GET", [1],
             [(.lost(reused: true), .retry(delay: 0, fresh: true, backend: 0)), (.lost(reused: false), .giveUp)]),
            ("connect failures move on without a policy, then 503", nil, "POST", [1, 1, 1],
             [(.connectFailed, .retry(delay: 0, fresh: false, backend: 1)), (.connectFailed, .retry(delay: 0, fresh: false, backend: 2)),
              (.connectFailed, .giveUp)]),
            ("policy: 503 goes to the other backend, then back to the first", policy, "GET", [1, 1],
             [(.status(503), .retry(delay: 0.1, fresh: false, backend: 1)), (.status(502), .retry(delay: 0.1, fresh: false, backend: 0)),
              (.status(503), .giveUp)]),
            ("policy: a code not listed is relayed", policy, "GET", [1, 1], [(.status(500), .giveUp)]),
            ("policy: connection failure on a fresh connection", policy, "PUT", [1, 1],
             [(.lost(reused: false), .retry(delay: 0.1, fresh: true, backend: 1))]),
            ("policy: connect failures move on, then use the attempts on all", policy, "POST", [1, 1],
             [(.connectFailed, .retry(delay: 0, fresh: false, backend: 1)), (.connectFailed, .retry(delay: 0.1, fresh: false, backend: 0)),
              (.connectFailed, .retry(delay: 0.1, fresh: false, backend: 0)), (.connectFailed, .giveUp)]),
            ("POST whose bytes were sent: never", policy, "POST", [1, 1], [(.lost(reused: true), .giveUp), (.status(503), .giveUp)]),
            ("PATCH: never", policy, "PATCH", [1, 1], [(.lost(reused: false), .giveUp)]),
        ]
        for c in cases {
            var rule = RetryRule(policy: c.policy, method: c.method, headers: [])
            var random = ConstantRandom(value: 1)
            for (index, (event, expected)) in c.events.enumerated() {
                let decision: D
                switch event {
                case .connectFailed: decision = rule.connectFailed(weights: c.weights, using: &random)
                case .lost(let reused): decision = rule.connectionLost(reused: reused, replayable: true, weights: c.weights, using: &random)
                case .status(let status): decision = rule.responded(status: status, replayable: true, weights: c.weights, using: &random)
                }
                XCTAssertEqual(decision, expected, "\(c.name), event \(index)")
            }
        }
        var big = RetryRule(policy: policy, method: "PUT", headers: [])
        var random = ConstantRandom(value: 1)
        XCTAssertEqual(big.connectionLost(reused: true, replayable: false, weights: [1], using: &random), .giveUp, "body beyond the replay limit")
        for method in ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"] { XCTAssertTrue(RetryRule.idempotent(method), method) }
        var keyed = RetryRule(policy: nil, method: "POST", headers: [HTTPField("Idempotency-Key", "\"1\"")])
        XCTAssertEqual(keyed.connectionLost(reused: true, replayable: true, weights: [1], using: &random), .retry(delay: 0, fresh: true, backend: 0))
        XCTAssertEqual(keyed.total, 1)
    }

    // MARK: - Real sockets

    /// A gateway whose rule sends every request to `first` (weight 1,000,000) or `second`
    /// (weight 1), with `retry` and `timeouts` when given; the first weighted choice is `first`
    /// but for one request in a million.
    func start(first: String, second: String, retry: String?, timeouts: String? = nil) throws -> UInt16 {
        gateway?.stop()
        try writeRoute(
            "routes.yaml", "default", "split",
            rules: [
                "- backendRefs: [{name: first, port: 80, weight: 1000000}, {name: second, port: 80, weight: 1}]",
                retry.map { "  retry: \($0)" }, timeouts.map { "  timeouts: \($0)" },
            ])
        return try serve(services: ["first": first, "second": second])
    }

    /// curl with `args` (HTTP/1.1, or h2c with prior knowledge): status and body.
    func curl(_ port: UInt16, _ path: String, h2: Bool, _ args: [String] = []) throws -> (status: String, body: String) {
        let out = "\(dir)/out-\(UUID())"
        let r = try runProcess(
            try tool("curl"),
            ["-sS", "--max-time", "20", "-o", out, "-w", "%{http_code} %{http_version}"] + (h2 ? ["--http2-prior-knowledge"] : [])
                + args + ["http://127.0.0.1:\(port)\(path)"])
        XCTAssertEqual(r.status, 0, r.err)
        let written = r.out.split(separator: " ")
        XCTAssertEqual(written.last.map(String.init), h2 ? "2" : "1.1", "protocol")
        return (written.first.map(String.init) ?? "", (try? String(contentsOfFile: out, encoding: .utf8)) ?? "")
    }

    /// The first backend answers 503 (or 429, a 4xx code the Gateway API v1 allows in
    /// `codes`): the retry goes to the second; both see the request once.
    func testRetriedStatusLandsOnTheOtherBackend() throws {
        for (status, h2) in [(503, false), (503, true), (429, false), (429, true)] {
            let first = try ScriptedBackend { _, _, _, _ in .respond(status, "busy") }
            defer { first.stop() }
            let second = try ScriptedBackend { _, _, _, _ in .respond(200, "second") }
            defer { second.stop() }
            let port = try start(first: first.address, second: second.address, retry: "{codes: [\(status)], attempts: 1, backoff: 10ms}")
            let path = "/status-\(status)-\(h2 ? "h2c" : "h1")"
            let body = String(repeating: "x", count: 3000)
            let answer = try curl(port, path, h2: h2, ["-X", "PUT", "--data-binary", body])
            XCTAssertEqual(answer.status, "200", answer.body)
            XCTAssertEqual(answer.body, "second")
            XCTAssertEqual(first.requests, ["conn#0 PUT \(path) 3000"])
            XCTAssertEqual(second.requests, ["conn#0 PUT \(path) 3000"])
            XCTAssertNotNil(
                capture.waitForLine(containing: ["request", "path=\(path)", "status=200", "retries=1", "backend=default/second:80", "tried=default/first:80"]),
                "\(capture.lines)")
        }
        XCTAssertTrue(metrics.render().contains("ugate_httproute_retries_total{route=\"default/split#0\",reason=\"status\"} 4"), metrics.render())
    }

    /// The first backend resets the connection after the request head: a GET goes to the
    /// second; a POST is answered 502 and reaches neither again.
    func testResetLandsOnTheOtherBackendButPostIsNotReplayed() throws {
        for h2 in [false, true] {
            let first = try ScriptedBackend { _, _, _, _ in .resetAfterHead }
            defer { first.stop() }
            let second = try ScriptedBackend { _, _, _, _ in .respond(200, "second") }
            defer { second.stop() }
            let port = try start(first: first.address, second: second.address, retry: "{codes: [503], attempts: 2}")
            let path = "/reset-\(h2 ? "h2c" : "h1")"
            let answer = try curl(port, path, h2: h2)
            XCTAssertEqual(answer.status, "200", answer.body)
            XCTAssertEqual(answer.body, "second")
            XCTAssertEqual(first.requests, ["conn#0 GET \(path) body-partial"])
            XCTAssertEqual(second.requests, ["conn#0 GET \(path) 0"])
            let post = try curl(port, path + "/post", h2: h2, ["--data-binary", "order"])
            XCTAssertEqual(post.status, "502", post.body)
            XCTAssertTrue(post.body.contains("not retried: POST is not idempotent"), post.body)
            usleep(200_000)
            XCTAssertEqual(first.requests, ["conn#0 GET \(path) body-partial", "conn#1 POST \(path)/post body-partial"])
            XCTAssertEqual(second.requests, ["conn#0 GET \(path) 0"], "the POST never reaches the second backend")
        }
        XCTAssertTrue(metrics.render().contains("ugate_httproute_retries_total{route=\"default/split#0\",reason=\"connection\"} 2"), metrics.render())
    }

    /// The first backend refuses connections: every request goes to the second, with or without
    /// `retry`; a POST too (nothing was written). With one backend that refuses and `retry`, the
    /// attempts are used on it and the answer is 503.
    func testRefusedConnectLandsOnTheOtherBackend() throws {
        let closed = try Sys.listen(try SocketAddress(host: "127.0.0.1", port: 0))
        let refusing = SocketAddress.local(of: closed)!.port
        Glibc.close(closed)
        for h2 in [false, true] {
            for retry in [nil, "{attempts: 1}"] as [String?] {
                let second = try ScriptedBackend { _, _, _, _ in .respond(200, "second") }
                defer { second.stop() }
                let port = try start(first: "127.0.0.1:\(refusing)", second: second.address, retry: retry)
                let path = "/refused-\(h2 ? "h2c" : "h1")-\(retry == nil ? "plain" : "retry")"
                XCTAssertEqual(try curl(port, path, h2: h2).body, "second")
                XCTAssertEqual(try curl(port, path + "/post", h2: h2, ["--data-binary", "order"]).body, "second")
                // Two curl runs: two client connections, maybe on two loops (two backend connections).
                XCTAssertEqual(second.requests.map { $0.drop { $0 != " " } }, [" GET \(path) 0", " POST \(path)/post 5"])
                XCTAssertNotNil(
                    capture.waitForLine(containing: ["request", "path=\(path)", "status=200", "backend=default/second:80", "tried=default/first:80"]),
                    "\(capture.lines)")
            }
        }
        let port = try start(first: "127.0.0.1:\(refusing)", second: "127.0.0.1:\(refusing)", retry: "{attempts: 2, backoff: 5ms}")
        let answer = try curl(port, "/all-refused", h2: false)
        XCTAssertEqual(answer.status, "503", answer.body)
        // Two candidates, then the two attempts: four connect failures named in the body.
        XCTAssertEqual(answer.body.components(separatedBy: "unavailable").count - 1, 4, answer.body)
    }
}
