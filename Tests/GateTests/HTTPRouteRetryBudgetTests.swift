import Foundation
import Synchronization
import XCTest

@testable import Gate

/// Retries as the Gateway API v1 `HTTPRouteRetry` allows them beyond 5xx codes (4xx codes are
/// in `testRetriedStatusLandsOnTheOtherBackend`): `timeouts.backendRequest` as the limit of
/// each try (a try that reaches it goes to another backend, idempotent requests only), and the
/// route's retry budget (`RetryBudget`: at most 20 % of the route's requests of the last 10 s
/// plus 3 per second), with the refused retries counted.
extension HTTPRouteRetryTests {
    // MARK: - Pure

    /// The budget as a value: a quiet route has the floor (30 retries in the 10 s window), a busy
    /// one 20 % of its requests on top; retries leave the window with their second.
    func testRetryBudgetTable() {
        var quiet = RetryBudget()
        let start: UInt64 = 5_000_000
        XCTAssertEqual((0..<40).filter { _ in quiet.retry(now: start) }.count, 30)
        var busy = RetryBudget()
        for _ in 0..<100 { busy.request(now: start) }
        XCTAssertEqual((0..<100).filter { _ in busy.retry(now: start + 500) }.count, 50)
        // 9.9 s later the same window; 10 s later its retries are gone (and its requests).
        XCTAssertFalse(busy.retry(now: start + 9_900))
        XCTAssertEqual((0..<40).filter { _ in busy.retry(now: start + 10_000) }.count, 30)
    }

    /// `attemptTimedOut`: with a policy, an idempotent replayable request goes to the untried
    /// candidate after the backoff on a new connection (a policy retry, which the budget
    /// governs); a POST, a body beyond the replay limit, or no policy: given up.
    func testAttemptTimeoutDecision() {
        var random = ConstantRandom(value: 1)
        let policy = RetryPolicy(attempts: 1, codes: [], backoff: 0.1)
        var get = RetryRule(policy: policy, method: "GET", headers: [])
        XCTAssertEqual(get.attemptTimedOut(replayable: true, weights: [1, 1], using: &random), .retry(delay: 0.1, fresh: true, backend: 1))
        XCTAssertTrue(get.isPolicyRetry)
        XCTAssertEqual(get.attemptTimedOut(replayable: true, weights: [1, 1], using: &random), .giveUp)
        var post = RetryRule(policy: policy, method: "POST", headers: [])
        XCTAssertEqual(post.attemptTimedOut(replayable: true, weights: [1, 1], using: &random), .giveUp)
        var big = RetryRule(policy: policy, method: "GET", headers: [])
        XCTAssertEqual(big.attemptTimedOut(replayable: false, weights: [1, 1], using: &random), .giveUp)
        var none = RetryRule(policy: nil, method: "GET", headers: [])
        XCTAssertEqual(none.attemptTimedOut(replayable: true, weights: [1, 1], using: &random), .giveUp)
        // A move after a connect failure is not a policy retry.
        var connect = RetryRule(policy: policy, method: "GET", headers: [])
        XCTAssertEqual(connect.connectFailed(weights: [1, 1], using: &random), .retry(delay: 0, fresh: false, backend: 1))
        XCTAssertFalse(connect.isPolicyRetry)
    }

    /// The loader keeps `backendRequest` as the per-try limit (not folded into the rule's
    /// deadline) and refuses one longer than `request`.
    func testBackendRequestIsPerTry() throws {
        let rule = try loadRule("timeouts: {request: 10s, backendRequest: 500ms}")
        XCTAssertEqual(rule.requestTimeout, 10)
        XCTAssertEqual(rule.backendRequestTimeout, 0.5)
        XCTAssertThrowsError(try loadRule("timeouts: {request: 1s, backendRequest: 2s}")) { error in
            XCTAssertTrue("\(error)".contains("r.yaml: HTTPRoute shop/r: spec.rules[0].timeouts.backendRequest: backendRequest 2.0 s is longer than request 1.0 s"), "\(error)")
        }
    }

    // MARK: - Real sockets

    /// `timeouts.backendRequest: 300ms` with `retry`: the first backend takes 5 s, so the GET's
    /// try times out and the request goes to the second backend (counted with reason
    /// `timeout`); a POST is not sent again and gets 504 after its try; without `retry` a GET
    /// gets 504 after its try too, long before the rule's 20 s.
    func testBackendRequestTimeoutRetriesOnTheOtherBackend() throws {
        let first = try ScriptedBackend { _, _, _, _ in .respondAfter(5, 200, "first, late") }
        defer { first.stop() }
        let second = try ScriptedBackend { _, _, _, _ in .respond(200, "second") }
        defer { second.stop() }
        for h2 in [false, true] {
            let port = try start(
                first: first.address, second: second.address, retry: "{attempts: 1, backoff: 10ms}", timeouts: "{request: 20s, backendRequest: 300ms}")
            let path = "/slow-\(h2 ? "h2c" : "h1")"
            let answer = try curl(port, path, h2: h2)
            XCTAssertEqual(answer.status, "200", answer.body)
            XCTAssertEqual(answer.body, "second")
            XCTAssertNotNil(
                capture.waitForLine(containing: ["request", "path=\(path)", "status=200", "retries=1", "backend=default/second:80", "tried=default/first:80"]),
                "\(capture.lines.suffix(3))")
            let post = try curl(port, path + "/post", h2: h2, ["--data-binary", "order"])
            XCTAssertEqual(post.status, "504", post.body)
            XCTAssertTrue(post.body.contains("timeouts.backendRequest"), post.body)
            XCTAssertFalse(second.requests.contains { $0.contains("POST") }, "\(second.requests)")
        }
        XCTAssertTrue(metrics.render().contains("ugate_httproute_retries_total{route=\"default/split#0\",reason=\"timeout\"} 2"), metrics.render())
        let port = try start(first: first.address, second: first.address, retry: nil, timeouts: "{backendRequest: 300ms}")
        let started = Date()
        let answer = try curl(port, "/no-retry", h2: false)
        XCTAssertEqual(answer.status, "504", answer.body)
        XCTAssertLessThan(Date().timeIntervalSince(started), 20, "the try's limit, not the rule's 20 s default")
    }

    /// A backend that answers every request 503, a rule with `codes: [503], attempts: 3`: 150
    /// requests would make 600 without a budget; the budget lets at most 20 % of them plus 30
    /// be retried, refuses the rest (counted), and every client still gets the backend's 503.
    func testRetryBudgetBoundsRetriesDuringAnOutage() throws {
        let backend = try ScriptedBackend { _, _, _, _ in .respond(503, "down") }
        defer { backend.stop() }
        let client = try KeptAliveClient(port: try start(backend, retry: "{codes: [503], attempts: 3}"))
        defer { client.close() }
        let requests = 150
        for i in 0..<requests {
            let answer = try client.send("GET", "/retry/\(i)")
            XCTAssertEqual(answer.status, 503, answer.body)
        }
        let sent = backend.requests.count
        let allowed = Int(RetryBudget.ratio * Double(requests)) + Int(RetryBudget.floorPerSecond) * RetryBudget.window
        XCTAssertLessThanOrEqual(sent, requests + allowed, "retries beyond the budget")
        XCTAssertGreaterThanOrEqual(sent, requests + Int(RetryBudget.floorPerSecond) * RetryBudget.window, "the floor was not used")
        let refused = metrics.render().split(separator: "\n").first { $0.hasPrefix("ugate_httproute_retries_refused_total{route=\"default/retry#0\"}") }
        // A request is refused at most once (its 503 is then relayed): at least one refusal
        // per three retries that did not happen.
        let refusals = refused.flatMap { Int($0.split(separator: " ").last ?? "") } ?? 0
        XCTAssertGreaterThanOrEqual(refusals, (requests * 4 - sent + 2) / 3, metrics.render())
        XCTAssertLessThanOrEqual(refusals, requests)
        XCTAssertNotNil(capture.waitForLine(containing: ["request", "status=503", "retry refused: the route's retry budget is spent"]), "\(capture.lines.suffix(3))")
    }
}
