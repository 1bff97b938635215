import CNice
import Logging
import Synchronization

/// Routes libnice's and GLib's own log (`g_log`) into swift-log.
///
/// GLib debug messages become `.trace`, info and message `.debug`, warnings `.warning`,
/// criticals `.error`. libnice only produces its debug stream when enabled; set the
/// environment variable `UGATE_ICE_LIBNICE_DEBUG=1` (or call ``enableLibniceDebug()``)
/// to get it — it is verbose and costs time on the data path.
public enum LibniceLog {
    private static let target = Mutex(Logger(label: "ugate.ice.libnice"))

    /// Where libnice's and GLib's messages go (default: `Logger(label: "ugate.ice.libnice")`).
    public static var logger: Logger {
        get { target.withLock { $0 } }
        set { target.withLock { $0 = newValue } }
    }
    private static let domains = ["libnice", "libnice-stun", "libnice-socket", "GLib", "GLib-GObject", "GLib-GIO"]

    private static let installed: Bool = {
        let levels = GLogLevelFlags(rawValue: G_LOG_LEVEL_MASK.rawValue | G_LOG_FLAG_FATAL.rawValue | G_LOG_FLAG_RECURSION.rawValue)
        for domain in domains {
            g_log_set_handler(domain, levels, { domain, level, message, _ in
                LibniceLog.forward(domain: domain, level: level, message: message)
            }, nil)
        }
        if let flag = getenv("UGATE_ICE_LIBNICE_DEBUG"), String(cString: flag) == "1" {
            nice_debug_enable(0)
        }
        return true
    }()

    /// Installs the handlers once per process (idempotent).
    static func install() { _ = installed }

    /// Turns on libnice's debug messages (delivered at `.trace`).
    public static func enableLibniceDebug() {
        install()
        nice_debug_enable(0)
    }

    /// Turns libnice's debug messages off again.
    public static func disableLibniceDebug() {
        nice_debug_disable(0)
    }

    private static func forward(domain: UnsafePointer<gchar>?, level: GLogLevelFlags, message: UnsafePointer<gchar>?) {
        let text = message.map { String(cString: $0) } ?? ""
        let source = domain.map { String(cString: $0) } ?? "glib"
        let bits = level.rawValue
        let swiftLevel: Logger.Level
        if bits & (G_LOG_LEVEL_ERROR.rawValue) != 0 {
            swiftLevel = .critical
        } else if bits & G_LOG_LEVEL_CRITICAL.rawValue != 0 {
            swiftLevel = .error
        } else if bits & G_LOG_LEVEL_WARNING.rawValue != 0 {
            swiftLevel = .warning
        } else if bits & (G_LOG_LEVEL_MESSAGE.rawValue | G_LOG_LEVEL_INFO.rawValue) != 0 {
            swiftLevel = .debug
        } else {
            swiftLevel = .trace
        }
        logger.log(level: swiftLevel, "\(text)", metadata: ["glib.domain": "\(source)"])
    }
}
