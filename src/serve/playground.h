// The web playground (src/serve/web/playground.html, compiled in: no files to deploy, no CDN, no build step): pick the
// base model and any modules, one prompt, the answers streamed side by side.
#pragma once

namespace frozenlm::serve {
const char* playground_html();
}
