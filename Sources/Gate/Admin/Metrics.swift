import CoreMetrics
import Foundation
import Metrics
import Synchronization

/// The gate's counters, through swift-metrics (whatever backend the executable bootstraps;
/// `PrometheusMetrics` renders them for /metrics).
final class GateMetrics: Sendable {
    static let shared = GateMetrics()

    private let opened = Counter(label: "ugate_gate_streams_opened_total")
    private let active = Meter(label: "ugate_gate_streams_active")
    private let bytesUp = Counter(label: "ugate_gate_bytes_total", dimensions: [("direction", "up")])
    private let bytesDown = Counter(label: "ugate_gate_bytes_total", dimensions: [("direction", "down")])
    private let closed: [String: Counter]
    /// By how the bytes moved: `copy`, `splice` (the Gate's relay), `stream` (carried by an
    /// `UpstreamStream`).
    private let byMode: [String: Counter]
    let accepted = Counter(label: "ugate_gate_accepted_total")
    let dialFailures = Counter(label: "ugate_gate_dial_failures_total")
    let handshakeFailures = Counter(label: "ugate_gate_handshake_failures_total")
    let udpDatagrams = Counter(label: "ugate_gate_udp_datagrams_total")

    private init() {
        var closed: [String: Counter] = [:]
        for end in [RelayEnd.done, .reset, .idle, .shutdown] {
            closed[end.rawValue] = Counter(label: "ugate_gate_streams_closed_total", dimensions: [("end", end.rawValue)])
        }
        self.closed = closed
        var byMode: [String: Counter] = [:]
        for mode in [ForwardMode.copy.rawValue, ForwardMode.splice.rawValue, GateMetrics.carriedMode] {
            byMode[mode] = Counter(label: "ugate_gate_streams_by_mode_total", dimensions: [("mode", mode)])
        }
        self.byMode = byMode
    }

    func streamOpened() {
        opened.increment()
        active.increment()
    }

    /// The mode label of streams an upstream carries itself (`UpstreamStream`).
    static let carriedMode = "stream"

    func streamClosed(up: UInt64, down: UInt64, end: String, mode: ForwardMode) {
        streamClosed(up: up, down: down, end: end, modeLabel: mode.rawValue)
    }

    func streamClosed(up: UInt64, down: UInt64, end: String, modeLabel: String) {
        active.decrement()
        bytesUp.increment(by: Int64(up))
        bytesDown.increment(by: Int64(down))
        closed[end]?.increment()
        byMode[modeLabel]?.increment()
    }
}

/// A minimal swift-metrics backend that keeps every metric in memory and renders the
/// Prometheus text exposition format (version 0.0.4) for the admin port's /metrics.
public final class PrometheusMetrics: MetricsFactory, Sendable {
    /// One stored metric: Prometheus type, name, labels and a value box.
    private final class Box: CounterHandler, FloatingPointCounterHandler, RecorderHandler, TimerHandler, MeterHandler, Sendable {
        let type: String
        let name: String
        let labels: String
        private let value = Mutex<(Double, Int64)>((0, 0))  // value (or sum), count

        init(type: String, name: String, dimensions: [(String, String)]) {
            self.type = type
            self.name = name
            labels = dimensions.isEmpty ? "" : "{" + dimensions.map { "\($0.0)=\"\(PrometheusMetrics.escape($0.1))\"" }.joined(separator: ",") + "}"
        }

        func increment(by amount: Int64) { value.withLock { $0.0 += Double(amount) } }
        func increment(by amount: Double) { value.withLock { $0.0 += amount } }
        func decrement(by amount: Double) { value.withLock { $0.0 -= amount } }
        func reset() { value.withLock { $0 = (0, 0) } }
        func set(_ v: Int64) { value.withLock { $0.0 = Double(v) } }
        func set(_ v: Double) { value.withLock { $0.0 = v } }
        func record(_ v: Int64) { record(Double(v)) }
        func record(_ v: Double) {
            value.withLock {
                if type == "summary" {
                    $0.0 += v
                    $0.1 += 1
                } else {
                    $0.0 = v
                }
            }
        }
        func recordNanoseconds(_ duration: Int64) { record(Double(duration) / 1e9) }

        func render(into out: inout String) {
            let (v, count) = value.withLock { $0 }
            if type == "summary" {
                out += "\(name)_sum\(labels) \(v)\n\(name)_count\(labels) \(count)\n"
            } else {
                out += "\(name)\(labels) \(v == v.rounded() && abs(v) < 1e15 ? String(Int64(v)) : String(v))\n"
            }
        }
    }

    private let boxes = Mutex<[String: Box]>([:])

    public init() {}

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            .replacingOccurrences(of: "\n", with: "\\n")
    }

    static func sanitize(_ label: String) -> String {
        String(label.map { $0.isLetter || $0.isNumber || $0 == "_" ? $0 : "_" })
    }

    private func box(_ type: String, _ label: String, _ dimensions: [(String, String)]) -> Box {
        let candidate = Box(type: type, name: Self.sanitize(label), dimensions: dimensions)
        let key = candidate.name + candidate.labels
        return boxes.withLock { all in
            if let existing = all[key] { return existing }
            all[key] = candidate
            return candidate
        }
    }

    public func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler {
        box("counter", label, dimensions)
    }
    public func makeFloatingPointCounter(label: String, dimensions: [(String, String)]) -> any FloatingPointCounterHandler {
        box("counter", label, dimensions)
    }
    public func makeMeter(label: String, dimensions: [(String, String)]) -> any MeterHandler {
        box("gauge", label, dimensions)
    }
    public func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler {
        box(aggregate ? "summary" : "gauge", label, dimensions)
    }
    public func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler {
        box("summary", label, dimensions)
    }
    public func destroyCounter(_ handler: any CounterHandler) {}
    public func destroyFloatingPointCounter(_ handler: any FloatingPointCounterHandler) {}
    public func destroyMeter(_ handler: any MeterHandler) {}
    public func destroyRecorder(_ handler: any RecorderHandler) {}
    public func destroyTimer(_ handler: any TimerHandler) {}

    /// The Prometheus text format of every metric, grouped by name with one `# TYPE` line each.
    public func render() -> String {
        let all = boxes.withLock { Array($0.values) }.sorted { ($0.name, $0.labels) < ($1.name, $1.labels) }
        var out = ""
        var lastName = ""
        for b in all {
            if b.name != lastName {
                out += "# TYPE \(b.name) \(b.type)\n"
                lastName = b.name
            }
            b.render(into: &out)
        }
        return out
    }
}
