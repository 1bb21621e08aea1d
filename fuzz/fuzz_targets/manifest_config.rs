//! A plugin's `plugin.toml` and the operator's config file, as text: any
//! text is a manifest or a reason, a config or a reason.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = memhost::plugins::Manifest::parse(text);
    if let Ok(config) = toml::from_str::<memhost::config::HostConfig>(text) {
        let _ = config.limits.validate();
        let _ = config.server.connections.validate();
    }
});
