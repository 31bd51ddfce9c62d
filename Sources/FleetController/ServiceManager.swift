import Logging
import ServiceLifecycle
import ServiceNotify

/// The controller under systemd `Type=notify`: READY=1 once its listener accepts connections,
/// WATCHDOG=1 while it runs, STOPPING=1 on shutdown. Does nothing when not started by systemd.
enum ServiceManager {
    static func notifier(host: String, port: Int, logger: Logger) -> any Service {
        ServiceNotifierService(logger: logger) { ListeningProbe.accepts(host: host, port: port) }
    }
}
