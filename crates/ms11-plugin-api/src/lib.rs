//! The one API boundary for third-party recovery strategies: a stable C ABI and the SDK
//! that exports a Rust implementation through it. Depends on no other crate of ours.
//!
//! A plugin is a `cdylib` exporting one function, `ms11_plugin_entry_v1`, which returns a
//! pointer to a static [`PluginHeader`]: magic, ABI version, the size of the vtable it
//! was built with, its id and version, and a [`PluginVTable`] of `extern "C"` functions.
//! Only integers, pointers and function pointers cross the boundary; strings are
//! pointer + length ([`StrRef`]); data is JSON; a buffer the plugin allocates
//! ([`OwnedBuf`]) is freed by the plugin (`free_buffer`). Every call returns a status
//! ([`STATUS_OK`], [`STATUS_ERROR`], [`STATUS_PANIC`]); the SDK catches panics at the
//! boundary. The vtable is append-only: a newer minor version only adds fields at the
//! end, and `vtable_size` tells the host which ones a plugin has.
//!
//! Plugin authors implement [`Plugin`] and write `export_plugin!(MyPlugin, "id", "1.0.0");`
//! (see `plugins/example` and `docs/plugins.md`).

#![allow(unsafe_code)] // this crate is the FFI boundary

use std::ffi::c_void;
use std::time::Duration;

pub use serde_json;

/// `b"MS11PLUG"`.
pub const MAGIC: [u8; 8] = *b"MS11PLUG";
/// Incompatible changes bump this (and the entry symbol's suffix).
pub const ABI_MAJOR: u16 = 1;
/// Compatible additions (new vtable fields at the end) bump this.
pub const ABI_MINOR: u16 = 0;
/// This SDK's version.
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");
/// The entry symbol.
pub const ENTRY_SYMBOL: &[u8] = b"ms11_plugin_entry_v1";
/// The call succeeded.
pub const STATUS_OK: i32 = 0;
/// The call failed; the output buffer holds a message.
pub const STATUS_ERROR: i32 = 1;
/// The plugin panicked; the output buffer holds the panic message.
pub const STATUS_PANIC: i32 = 2;

/// A borrowed UTF-8 string: pointer and length (no NUL).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct StrRef {
    /// First byte.
    pub ptr: *const u8,
    /// Length in bytes.
    pub len: usize,
}

impl StrRef {
    /// Borrows a Rust string (usable in statics).
    pub const fn new(s: &str) -> StrRef {
        StrRef {
            ptr: s.as_ptr(),
            len: s.len(),
        }
    }

    /// The bytes.
    ///
    /// # Safety
    /// `ptr` must point to `len` readable bytes that outlive the returned slice.
    pub unsafe fn as_bytes<'a>(&self) -> &'a [u8] {
        if self.ptr.is_null() || self.len == 0 {
            return &[];
        }
        // SAFETY: the caller guarantees ptr/len describe live bytes.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// A buffer allocated by the plugin and freed by its `free_buffer`.
#[repr(C)]
pub struct OwnedBuf {
    /// First byte (null when empty).
    pub ptr: *mut u8,
    /// Length.
    pub len: usize,
    /// Capacity (for the plugin's allocator).
    pub cap: usize,
}

impl OwnedBuf {
    /// An empty buffer (nothing to free).
    pub const fn empty() -> OwnedBuf {
        OwnedBuf {
            ptr: std::ptr::null_mut(),
            len: 0,
            cap: 0,
        }
    }

    /// Hands a `String`'s allocation over (the plugin side).
    pub fn from_string(s: String) -> OwnedBuf {
        let mut bytes = std::mem::ManuallyDrop::new(s.into_bytes());
        OwnedBuf {
            ptr: bytes.as_mut_ptr(),
            len: bytes.len(),
            cap: bytes.capacity(),
        }
    }
}

/// The static description a plugin exports. Frozen: never changes within ABI major 1.
#[repr(C)]
pub struct PluginHeader {
    /// [`MAGIC`].
    pub magic: [u8; 8],
    /// [`ABI_MAJOR`] the plugin was built with.
    pub abi_major: u16,
    /// [`ABI_MINOR`] the plugin was built with.
    pub abi_minor: u16,
    /// `size_of::<PluginVTable>()` when the plugin was built.
    pub vtable_size: u32,
    /// The plugin's id.
    pub plugin_id: StrRef,
    /// The plugin's version.
    pub plugin_version: StrRef,
    /// The SDK version it was built with (diagnostics).
    pub sdk_version: StrRef,
    /// The functions.
    pub vtable: *const PluginVTable,
}

/// The plugin's functions. Append-only.
#[repr(C)]
pub struct PluginVTable {
    /// Creates an instance from the JSON config; on error `err` holds a message.
    pub create:
        unsafe extern "C" fn(config: StrRef, out: *mut *mut c_void, err: *mut OwnedBuf) -> i32,
    /// Destroys an instance.
    pub destroy: unsafe extern "C" fn(instance: *mut c_void),
    /// The strategy names it provides, as a JSON array.
    pub strategies: unsafe extern "C" fn(instance: *mut c_void, out: *mut OwnedBuf) -> i32,
    /// Whether a strategy applies to an incident (JSON): `{"applies":bool,"reason":"..."}`.
    pub applies_to: unsafe extern "C" fn(
        instance: *mut c_void,
        strategy: StrRef,
        incident: StrRef,
        out: *mut OwnedBuf,
    ) -> i32,
    /// Runs a strategy within `deadline_ms`: `{"outcome":"recovered"|"failed"|"terminal","reason":"..."}`.
    pub recover: unsafe extern "C" fn(
        instance: *mut c_void,
        strategy: StrRef,
        incident: StrRef,
        deadline_ms: u64,
        out: *mut OwnedBuf,
    ) -> i32,
    /// Frees a buffer this plugin allocated.
    pub free_buffer: unsafe extern "C" fn(buf: OwnedBuf),
}

/// A header in a `static` (raw pointers are not `Sync` by themselves).
#[repr(transparent)]
pub struct StaticHeader(pub PluginHeader);

// SAFETY: the header only points to 'static immutable data (string literals, a static
// vtable of function pointers); nothing is ever written through it.
unsafe impl Sync for StaticHeader {}

/// A vtable in a `static`.
#[repr(transparent)]
pub struct StaticVTable(pub PluginVTable);

// SAFETY: function pointers only, never mutated.
unsafe impl Sync for StaticVTable {}

/// How a plugin's recovery attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginOutcome {
    /// The session is back.
    Recovered,
    /// This attempt failed.
    Failed(String),
    /// Nothing automatic can fix it.
    Terminal(String),
}

/// What a plugin author implements.
pub trait Plugin: Sized + Send + 'static {
    /// Creates the plugin from its configuration (`[plugins.config.<id>]`, as JSON).
    fn create(config: &serde_json::Value) -> Result<Self, String>;
    /// The strategy names it provides (used in `pipeline = [...]`).
    fn strategies(&self) -> Vec<String>;
    /// Whether `strategy` should run for this incident (JSON of an incident); `Err` says why not.
    fn applies_to(&self, strategy: &str, incident: &serde_json::Value) -> Result<(), String>;
    /// Tries to recover within `deadline`.
    fn recover(
        &mut self,
        strategy: &str,
        incident: &serde_json::Value,
        deadline: Duration,
    ) -> PluginOutcome;
}

/// The SDK's implementations of the vtable functions, generic over the plugin type;
/// `export_plugin!` instantiates them.
pub mod sdk {
    use super::*;
    use std::panic::{AssertUnwindSafe, catch_unwind};

    fn panic_message(e: &(dyn std::any::Any + Send)) -> String {
        e.downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| e.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".into())
    }

    /// Writes `text` into `out` (if not null).
    ///
    /// # Safety
    /// `out` is null or valid for a write.
    unsafe fn put(out: *mut OwnedBuf, text: String) {
        if !out.is_null() {
            // SAFETY: the caller passes a valid, writable OwnedBuf pointer.
            unsafe { out.write(OwnedBuf::from_string(text)) };
        }
    }

    /// Runs `f`, turning a panic into [`STATUS_PANIC`] with its message.
    fn guarded(out: *mut OwnedBuf, f: impl FnOnce() -> Result<String, String>) -> i32 {
        match catch_unwind(AssertUnwindSafe(f)) {
            // SAFETY (both arms): `out` comes from the host as a valid pointer or null.
            Ok(Ok(text)) => {
                unsafe { put(out, text) };
                STATUS_OK
            }
            Ok(Err(text)) => {
                unsafe { put(out, text) };
                STATUS_ERROR
            }
            Err(e) => {
                unsafe { put(out, panic_message(e.as_ref())) };
                STATUS_PANIC
            }
        }
    }

    fn json_arg(s: StrRef) -> Result<serde_json::Value, String> {
        // SAFETY: the host passes a live string for the duration of the call.
        let bytes = unsafe { s.as_bytes() };
        serde_json::from_slice(bytes).map_err(|e| format!("invalid JSON from the host: {e}"))
    }

    fn str_arg(s: StrRef) -> Result<String, String> {
        // SAFETY: as above.
        let bytes = unsafe { s.as_bytes() };
        String::from_utf8(bytes.to_vec()).map_err(|_| "invalid UTF-8 from the host".to_owned())
    }

    /// `create`.
    ///
    /// # Safety
    /// Pointers as documented on [`PluginVTable::create`].
    pub unsafe fn create<P: Plugin>(
        config: StrRef,
        out: *mut *mut c_void,
        err: *mut OwnedBuf,
    ) -> i32 {
        guarded(err, || {
            let config = json_arg(config)?;
            let plugin = P::create(&config)?;
            let instance = Box::into_raw(Box::new(plugin)).cast::<c_void>();
            if !out.is_null() {
                // SAFETY: `out` is a valid pointer from the host.
                unsafe { out.write(instance) };
            }
            Ok(String::new())
        })
    }

    /// `destroy`.
    ///
    /// # Safety
    /// `instance` came from `create::<P>` and is destroyed once.
    pub unsafe fn destroy<P: Plugin>(instance: *mut c_void) {
        if !instance.is_null() {
            let _ = catch_unwind(AssertUnwindSafe(|| {
                // SAFETY: created by Box::into_raw in `create::<P>`.
                drop(unsafe { Box::from_raw(instance.cast::<P>()) });
            }));
        }
    }

    /// # Safety
    /// `instance` came from `create::<P>` and is alive.
    unsafe fn plugin<'a, P: Plugin>(instance: *mut c_void) -> Result<&'a mut P, String> {
        // SAFETY: the host passes the instance it got from `create`.
        unsafe { instance.cast::<P>().as_mut() }.ok_or_else(|| "null plugin instance".to_owned())
    }

    /// `strategies`.
    ///
    /// # Safety
    /// As documented on [`PluginVTable::strategies`].
    pub unsafe fn strategies<P: Plugin>(instance: *mut c_void, out: *mut OwnedBuf) -> i32 {
        guarded(out, || {
            // SAFETY: see `plugin`.
            let p = unsafe { plugin::<P>(instance)? };
            serde_json::to_string(&p.strategies()).map_err(|e| e.to_string())
        })
    }

    /// `applies_to`.
    ///
    /// # Safety
    /// As documented on [`PluginVTable::applies_to`].
    pub unsafe fn applies_to<P: Plugin>(
        instance: *mut c_void,
        strategy: StrRef,
        incident: StrRef,
        out: *mut OwnedBuf,
    ) -> i32 {
        guarded(out, || {
            // SAFETY: see `plugin`.
            let p = unsafe { plugin::<P>(instance)? };
            let answer = match p.applies_to(&str_arg(strategy)?, &json_arg(incident)?) {
                Ok(()) => serde_json::json!({"applies": true}),
                Err(reason) => serde_json::json!({"applies": false, "reason": reason}),
            };
            Ok(answer.to_string())
        })
    }

    /// `recover`.
    ///
    /// # Safety
    /// As documented on [`PluginVTable::recover`].
    pub unsafe fn recover<P: Plugin>(
        instance: *mut c_void,
        strategy: StrRef,
        incident: StrRef,
        deadline_ms: u64,
        out: *mut OwnedBuf,
    ) -> i32 {
        guarded(out, || {
            // SAFETY: see `plugin`.
            let p = unsafe { plugin::<P>(instance)? };
            let outcome = p.recover(
                &str_arg(strategy)?,
                &json_arg(incident)?,
                Duration::from_millis(deadline_ms),
            );
            let answer = match outcome {
                PluginOutcome::Recovered => serde_json::json!({"outcome": "recovered"}),
                PluginOutcome::Failed(r) => serde_json::json!({"outcome": "failed", "reason": r}),
                PluginOutcome::Terminal(r) => {
                    serde_json::json!({"outcome": "terminal", "reason": r})
                }
            };
            Ok(answer.to_string())
        })
    }

    /// `free_buffer`.
    ///
    /// # Safety
    /// `buf` was made by [`OwnedBuf::from_string`] in this library and is freed once.
    pub unsafe extern "C" fn free_buffer(buf: OwnedBuf) {
        if !buf.ptr.is_null() {
            // SAFETY: ptr/len/cap come from a Vec<u8> of this library's allocator.
            drop(unsafe { Vec::from_raw_parts(buf.ptr, buf.len, buf.cap) });
        }
    }
}

/// Exports a [`Plugin`] implementation: `export_plugin!(MyPlugin, "my-id", "1.0.0");`
#[macro_export]
macro_rules! export_plugin {
    ($ty:ty, $id:expr, $version:expr) => {
        unsafe extern "C" fn __ms11_create(
            config: $crate::StrRef,
            out: *mut *mut ::std::ffi::c_void,
            err: *mut $crate::OwnedBuf,
        ) -> i32 {
            // SAFETY: forwarded unchanged from the host, which follows the ABI.
            unsafe { $crate::sdk::create::<$ty>(config, out, err) }
        }
        unsafe extern "C" fn __ms11_destroy(instance: *mut ::std::ffi::c_void) {
            // SAFETY: as above.
            unsafe { $crate::sdk::destroy::<$ty>(instance) }
        }
        unsafe extern "C" fn __ms11_strategies(
            instance: *mut ::std::ffi::c_void,
            out: *mut $crate::OwnedBuf,
        ) -> i32 {
            // SAFETY: as above.
            unsafe { $crate::sdk::strategies::<$ty>(instance, out) }
        }
        unsafe extern "C" fn __ms11_applies_to(
            instance: *mut ::std::ffi::c_void,
            strategy: $crate::StrRef,
            incident: $crate::StrRef,
            out: *mut $crate::OwnedBuf,
        ) -> i32 {
            // SAFETY: as above.
            unsafe { $crate::sdk::applies_to::<$ty>(instance, strategy, incident, out) }
        }
        unsafe extern "C" fn __ms11_recover(
            instance: *mut ::std::ffi::c_void,
            strategy: $crate::StrRef,
            incident: $crate::StrRef,
            deadline_ms: u64,
            out: *mut $crate::OwnedBuf,
        ) -> i32 {
            // SAFETY: as above.
            unsafe { $crate::sdk::recover::<$ty>(instance, strategy, incident, deadline_ms, out) }
        }
        static __MS11_VTABLE: $crate::StaticVTable = $crate::StaticVTable($crate::PluginVTable {
            create: __ms11_create,
            destroy: __ms11_destroy,
            strategies: __ms11_strategies,
            applies_to: __ms11_applies_to,
            recover: __ms11_recover,
            free_buffer: $crate::sdk::free_buffer,
        });
        static __MS11_HEADER: $crate::StaticHeader = $crate::StaticHeader($crate::PluginHeader {
            magic: $crate::MAGIC,
            abi_major: $crate::ABI_MAJOR,
            abi_minor: $crate::ABI_MINOR,
            vtable_size: ::std::mem::size_of::<$crate::PluginVTable>() as u32,
            plugin_id: $crate::StrRef::new($id),
            plugin_version: $crate::StrRef::new($version),
            sdk_version: $crate::StrRef::new($crate::SDK_VERSION),
            vtable: &__MS11_VTABLE.0,
        });
        /// The plugin's entry point.
        #[unsafe(no_mangle)]
        pub extern "C" fn ms11_plugin_entry_v1() -> *const $crate::PluginHeader {
            &__MS11_HEADER.0
        }
    };
}
