//! Opening a URL in the user's browser, best effort.

use std::process::{Command, Stdio};

/// Tries to open `url` in a browser; false when there is none to open.
///
/// Never blocks on the browser and never fails: on Linux it needs a graphical
/// session (`DISPLAY` or `WAYLAND_DISPLAY`), so a text browser does not take
/// over the terminal in an SSH session.
pub fn open(url: &str, graphical: bool) -> bool {
    let (program, args): (&str, Vec<&str>) = if cfg!(target_os = "macos") {
        ("open", vec![url])
    } else if cfg!(windows) {
        ("rundll32", vec!["url.dll,FileProtocolHandler", url])
    } else if graphical {
        ("xdg-open", vec![url])
    } else {
        return false;
    };
    match Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(mut child) => {
            // Reap it in the background; some openers wait for the browser.
            std::thread::spawn(move || child.wait());
            true
        }
        Err(_) => false,
    }
}

/// Whether a graphical session is available (Linux and other Unixes).
pub fn has_display() -> bool {
    ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()))
}
