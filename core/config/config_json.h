#pragma once
// The running config as JSON (the admin's GET /config): every field of config.h, durations as
// config strings ("250ms"), sizes as byte counts, addresses as text. Values under a key named
// like key material (key, *_key, password, secret, private) are shown as "[redacted]".
// Owner: any thread (pure).
#include <string>
#include <string_view>

#include "core/config/config.h"

namespace ringlb::core::config {

std::string config_to_json(const Config& config);

/// "250ms", "2s", "1m", "0s", "1500us": the largest unit that divides it, in the syntax the
/// config file takes.
std::string duration_text(Duration d);

/// A key whose value is key material and is never shown.
bool is_secret_key(std::string_view key);

}  // namespace ringlb::core::config
