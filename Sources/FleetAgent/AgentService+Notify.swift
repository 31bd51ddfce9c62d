import ServiceNotify

/// The sd_notify speaker `AgentService` uses (READY, WATCHDOG, STOPPING); see ServiceNotify.
public typealias AgentNotifier = ServiceNotifier
