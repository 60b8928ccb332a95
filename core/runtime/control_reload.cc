// Temporary (admin branch): lets POST /reload link until the reload work lands its own
// control_reload.cc, which replaces this file.
#include "core/runtime/control.h"

namespace ringlb::core::runtime {

Controller::ReloadResult Controller::reload() {
  return {false, "reload is not implemented yet"};
}

}  // namespace ringlb::core::runtime
