#pragma once
// systemd's service notification protocol (sd_notify(3)) without libsystemd: one datagram with
// newline-separated VAR=VALUE assignments ("READY=1", "STOPPING=1", "STATUS=...") to the
// AF_UNIX socket named by $NOTIFY_SOCKET, which systemd sets for Type=notify units. The unit
// (packaging/ringlb.service) relies on READY=1 to mark the start done; outside systemd the
// variable is unset and nothing is sent.
// Any thread; ringlb calls it from the control thread only (start-up, drain).
#include <string_view>

#include "core/base/result.h"

namespace ringlb::core::runtime {

/// Sends `state` to $NOTIFY_SOCKET. true: sent; false: the variable is unset or empty (not run
/// by systemd as Type=notify, nothing to do); an error when the socket name is unusable or the
/// send failed. Never blocks (MSG_DONTWAIT): a full receive queue is an error, not a stall.
base::Result<bool> sd_notify(std::string_view state);

/// The same to an explicit socket name: "/abs/path" or "@abstract" (systemd's two forms).
base::Result<bool> sd_notify_to(std::string_view socket_name, std::string_view state);

/// sd_notify() for the process: logs what was sent (its first line, e.g. `systemd: READY=1`)
/// or why it failed (a warning: systemd then times the start out, which says more than we can).
void notify_systemd(std::string_view state);

}  // namespace ringlb::core::runtime
