//! A real redis-server on an ephemeral loopback port, killed on drop.

use std::process::{Child, Command, Stdio};

pub struct RedisServer {
    pub port: u16,
    child: Child,
}

impl RedisServer {
    /// Starts redis-server, or returns None (loudly) when it is not
    /// installed — unless POPGATE_REQUIRE_TOOLS=1, where that fails the test.
    pub fn start() -> Option<Self> {
        let port = crate::free_port();
        let child = match Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                crate::tool_missing(&format!(
                    "SKIPPED: redis-server not runnable ({e}); install the redis-server package"
                ));
                return None;
            }
        };
        crate::wait_listening(port, "redis-server");
        Some(RedisServer { port, child })
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
