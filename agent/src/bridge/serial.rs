//! The serial side of the bridge: a device node (a USB-serial adapter, a board's UART), or a
//! socket that an emulator's UART connects to (QEMU `-serial tcp:HOST:PORT`, or
//! `-chardev socket,path=PATH`).

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// `--serial SPEC`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SerialSpec {
    /// `tcp:HOST:PORT`: listen; the UART connects (QEMU is the client and reconnects).
    Tcp(std::net::SocketAddr),
    /// `unix:PATH`: listen on a Unix socket.
    Unix(PathBuf),
    /// A device node, `/dev/ttyUSB0` (or `device:PATH`), set to raw 8N1 at the baud rate.
    Device(PathBuf),
}

impl std::str::FromStr for SerialSpec {
    type Err = String;

    fn from_str(spec: &str) -> Result<SerialSpec, String> {
        if let Some(address) = spec.strip_prefix("tcp:") {
            let address =
                address.parse().map_err(|error| format!("tcp:{address}: {error} (expected tcp:HOST:PORT)"))?;
            return Ok(SerialSpec::Tcp(address));
        }
        if let Some(path) = spec.strip_prefix("unix:") {
            return Ok(SerialSpec::Unix(PathBuf::from(path)));
        }
        if let Some(path) = spec.strip_prefix("device:") {
            return Ok(SerialSpec::Device(PathBuf::from(path)));
        }
        if spec.starts_with('/') {
            return Ok(SerialSpec::Device(PathBuf::from(spec)));
        }
        Err(format!("unknown serial spec {spec:?}: a device path (/dev/ttyUSB0), tcp:HOST:PORT or unix:PATH"))
    }
}

impl std::fmt::Display for SerialSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SerialSpec::Tcp(address) => write!(f, "tcp:{address}"),
            SerialSpec::Unix(path) => write!(f, "unix:{}", path.display()),
            SerialSpec::Device(path) => write!(f, "{}", path.display()),
        }
    }
}

/// A byte stream to the microcontroller, whatever carries it.
pub trait SerialStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> SerialStream for T {}

/// Where connections come from: a listener accepts them, a device node is opened again after
/// it failed (a USB adapter unplugged and plugged back).
#[derive(Debug)]
pub enum SerialSource {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener, PathBuf),
    Device(PathBuf, u32),
}

impl SerialSource {
    /// Binds the listener now, so a UART that connects early finds it.
    pub async fn open(spec: &SerialSpec, baud: u32) -> std::io::Result<SerialSource> {
        Ok(match spec {
            SerialSpec::Tcp(address) => SerialSource::Tcp(tokio::net::TcpListener::bind(address).await?),
            SerialSpec::Unix(path) => {
                // A socket file left by an earlier bridge would make bind fail.
                if std::fs::symlink_metadata(path)
                    .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
                {
                    std::fs::remove_file(path)?;
                }
                SerialSource::Unix(tokio::net::UnixListener::bind(path)?, path.clone())
            }
            SerialSpec::Device(path) => SerialSource::Device(path.clone(), baud),
        })
    }

    /// The next connection; for a device node, opening it.
    pub async fn next(&self) -> std::io::Result<(Box<dyn SerialStream>, String)> {
        match self {
            SerialSource::Tcp(listener) => {
                let (stream, peer) = listener.accept().await?;
                stream.set_nodelay(true)?;
                Ok((Box::new(stream), peer.to_string()))
            }
            SerialSource::Unix(listener, path) => {
                let (stream, _) = listener.accept().await?;
                Ok((Box::new(stream), path.display().to_string()))
            }
            SerialSource::Device(path, baud) => {
                Ok((Box::new(TtyStream::open(path, *baud)?), path.display().to_string()))
            }
        }
    }

    /// Whether a second connection replaces the first (listeners: a restarted emulator
    /// reconnects before the old connection's end is seen).
    pub fn accepts_while_connected(&self) -> bool {
        !matches!(self, SerialSource::Device(..))
    }
}

impl Drop for SerialSource {
    fn drop(&mut self) {
        if let SerialSource::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A terminal device in raw mode, non-blocking, driven by tokio's reactor.
#[derive(Debug)]
pub struct TtyStream {
    fd: AsyncFd<std::fs::File>,
}

impl TtyStream {
    pub fn open(path: &std::path::Path, baud: u32) -> std::io::Result<TtyStream> {
        use nix::sys::termios::{self, SetArg};
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(nix::libc::O_NOCTTY | nix::libc::O_NONBLOCK)
            .open(path)?;
        let mut settings = termios::tcgetattr(file.as_fd()).map_err(std::io::Error::from)?;
        // Raw 8N1: no echo, no line editing, no translation of 0x00 or CR/LF.
        termios::cfmakeraw(&mut settings);
        let rate = baud_rate(baud).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("unsupported baud rate {baud}"))
        })?;
        termios::cfsetspeed(&mut settings, rate).map_err(std::io::Error::from)?;
        termios::tcsetattr(file.as_fd(), SetArg::TCSANOW, &settings).map_err(std::io::Error::from)?;
        // `AsyncFd::new` is deprecated because a caller could close the descriptor while it is
        // registered; here the `File` moves into the `AsyncFd`, which owns it until both drop
        // together. Its replacement, `register`, is `unsafe`, which this crate forbids.
        #[allow(deprecated)]
        let fd = AsyncFd::new(file)?;
        Ok(TtyStream { fd })
    }
}

fn baud_rate(baud: u32) -> Option<nix::sys::termios::BaudRate> {
    use nix::sys::termios::BaudRate;
    Some(match baud {
        9_600 => BaudRate::B9600,
        19_200 => BaudRate::B19200,
        38_400 => BaudRate::B38400,
        57_600 => BaudRate::B57600,
        115_200 => BaudRate::B115200,
        230_400 => BaudRate::B230400,
        460_800 => BaudRate::B460800,
        921_600 => BaudRate::B921600,
        1_000_000 => BaudRate::B1000000,
        _ => return None,
    })
}

impl AsyncRead for TtyStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        loop {
            let mut guard = ready!(self.fd.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|inner| std::io::Read::read(&mut inner.get_ref(), unfilled)) {
                Ok(Ok(len)) => {
                    buf.advance(len);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(error)) => return Poll::Ready(Err(error)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for TtyStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        loop {
            let mut guard = ready!(self.fd.poll_write_ready(cx))?;
            match guard.try_io(|inner| std::io::Write::write(&mut inner.get_ref(), buf)) {
                Ok(result) => return Poll::Ready(result),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_bad_ones_say_what_is_expected() {
        assert_eq!("tcp:127.0.0.1:7401".parse(), Ok(SerialSpec::Tcp("127.0.0.1:7401".parse().unwrap())));
        assert_eq!("unix:/run/uart.sock".parse(), Ok(SerialSpec::Unix("/run/uart.sock".into())));
        assert_eq!("/dev/ttyUSB0".parse(), Ok(SerialSpec::Device("/dev/ttyUSB0".into())));
        assert_eq!("device:ttyS0".parse(), Ok(SerialSpec::Device("ttyS0".into())));
        assert!("tcp:nowhere".parse::<SerialSpec>().unwrap_err().contains("tcp:HOST:PORT"));
        assert!("COM3".parse::<SerialSpec>().unwrap_err().contains("unknown serial spec"));
    }
}
