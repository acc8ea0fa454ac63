//! Opening a plugin library and talking to it through its C ABI. Runs inside the
//! `ms11-plugin-host` child, so a plugin that crashes takes only that process down.

#![allow(unsafe_code)] // the plugin ABI

use std::ffi::c_void;
use std::path::Path;

use ms11_plugin_api::{
    ABI_MAJOR, ABI_MINOR, ENTRY_SYMBOL, MAGIC, OwnedBuf, PluginHeader, PluginVTable, STATUS_OK,
    STATUS_PANIC, StrRef,
};

/// An opened library whose header checked out, before an instance exists.
pub struct OpenedLibrary {
    /// Its id.
    pub id: String,
    /// Its version.
    pub version: String,
    vtable: &'static PluginVTable,
}

/// A loaded plugin with one instance. The library is never unloaded.
pub struct LoadedPlugin {
    /// Its id.
    pub id: String,
    /// Its version.
    pub version: String,
    vtable: &'static PluginVTable,
    instance: *mut c_void,
}

/// A failed call: the plugin's message, and whether it panicked.
#[derive(Debug)]
pub struct CallError {
    /// The message.
    pub message: String,
    /// It panicked (the SDK caught it).
    pub panicked: bool,
}

fn text(s: &StrRef) -> String {
    // SAFETY: header strings point to the plugin's static data, which stays mapped
    // because the library is never unloaded.
    String::from_utf8_lossy(unsafe { s.as_bytes() }).into_owned()
}

impl OpenedLibrary {
    /// Opens `path` (RTLD_NOW | RTLD_LOCAL) and checks its header.
    pub fn open(path: &Path) -> Result<OpenedLibrary, String> {
        use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW, Symbol};
        // SAFETY: loading runs the library's initialisers; the file passed the
        // ownership, permission and hash checks first, and we are an isolated child.
        let library = unsafe { Library::open(Some(path), RTLD_NOW | RTLD_LOCAL) }
            .map_err(|e| format!("cannot load: {e}"))?;
        // Never unload: code and static data must stay mapped (TLS destructors, late
        // callbacks).
        let library: &'static Library = Box::leak(Box::new(library));
        // SAFETY: the symbol's type is the ABI's entry-point signature.
        let entry: Symbol<extern "C" fn() -> *const PluginHeader> =
            unsafe { library.get(ENTRY_SYMBOL) }.map_err(|_| {
                format!(
                    "not an ms11-recovery plugin: no `{}` symbol",
                    String::from_utf8_lossy(ENTRY_SYMBOL)
                )
            })?;
        let header_ptr = entry();
        // SAFETY: the entry point returns a pointer to its static header (checked non-null).
        let header: &'static PluginHeader =
            unsafe { header_ptr.as_ref() }.ok_or("the entry point returned no header")?;
        if header.magic != MAGIC {
            return Err(format!(
                "bad magic {:?}: not an ms11-recovery plugin",
                String::from_utf8_lossy(&header.magic)
            ));
        }
        if header.abi_major != ABI_MAJOR {
            return Err(format!(
                "plugin `{}` was built for plugin ABI {}.{}; this ms11-recovery speaks ABI {ABI_MAJOR}.{ABI_MINOR}: rebuild it against a matching ms11-plugin-api",
                text(&header.plugin_id),
                header.abi_major,
                header.abi_minor
            ));
        }
        if header.abi_minor > ABI_MINOR {
            return Err(format!(
                "plugin `{}` needs plugin ABI {ABI_MAJOR}.{} (newer than this ms11-recovery's {ABI_MAJOR}.{ABI_MINOR}): upgrade ms11-recovery",
                text(&header.plugin_id),
                header.abi_minor
            ));
        }
        if (header.vtable_size as usize) < std::mem::size_of::<PluginVTable>()
            || header.vtable.is_null()
        {
            return Err(format!(
                "plugin `{}` has an incomplete vtable ({} bytes)",
                text(&header.plugin_id),
                header.vtable_size
            ));
        }
        // SAFETY: non-null, static, and at least as large as the fields we use.
        let vtable: &'static PluginVTable = unsafe { &*header.vtable };
        Ok(OpenedLibrary {
            id: text(&header.plugin_id),
            version: text(&header.plugin_version),
            vtable,
        })
    }

    /// Creates the plugin's instance from its configuration.
    pub fn create(self, config: &serde_json::Value) -> Result<LoadedPlugin, String> {
        let vtable = self.vtable;
        let config_text = config.to_string();
        let mut instance: *mut c_void = std::ptr::null_mut();
        let mut err = OwnedBuf::empty();
        // SAFETY: arguments follow the ABI; the config string outlives the call.
        let status = unsafe { (vtable.create)(StrRef::new(&config_text), &mut instance, &mut err) };
        let message = take(vtable, err);
        if status == STATUS_PANIC {
            return Err(format!(
                "plugin `{}` panicked while starting: {message}",
                self.id
            ));
        }
        if status != STATUS_OK || instance.is_null() {
            return Err(format!(
                "plugin `{}` refused its configuration: {message}",
                self.id
            ));
        }
        Ok(LoadedPlugin {
            id: self.id,
            version: self.version,
            vtable,
            instance,
        })
    }
}

impl LoadedPlugin {
    /// The strategies it provides.
    pub fn strategies(&self) -> Result<Vec<String>, CallError> {
        let mut out = OwnedBuf::empty();
        // SAFETY: instance from `create`, out is a valid buffer slot.
        let status = unsafe { (self.vtable.strategies)(self.instance, &mut out) };
        let text = self.result(status, out)?;
        serde_json::from_str(&text).map_err(|e| CallError {
            message: format!("invalid strategies JSON: {e}"),
            panicked: false,
        })
    }

    /// `applies_to` → the plugin's JSON answer.
    pub fn applies_to(&self, strategy: &str, incident: &str) -> Result<String, CallError> {
        let mut out = OwnedBuf::empty();
        // SAFETY: as above; the strings outlive the call.
        let status = unsafe {
            (self.vtable.applies_to)(
                self.instance,
                StrRef::new(strategy),
                StrRef::new(incident),
                &mut out,
            )
        };
        self.result(status, out)
    }

    /// `recover` → the plugin's JSON answer.
    pub fn recover(
        &self,
        strategy: &str,
        incident: &str,
        deadline_ms: u64,
    ) -> Result<String, CallError> {
        let mut out = OwnedBuf::empty();
        // SAFETY: as above.
        let status = unsafe {
            (self.vtable.recover)(
                self.instance,
                StrRef::new(strategy),
                StrRef::new(incident),
                deadline_ms,
                &mut out,
            )
        };
        self.result(status, out)
    }

    fn result(&self, status: i32, out: OwnedBuf) -> Result<String, CallError> {
        let text = take(self.vtable, out);
        match status {
            STATUS_OK => Ok(text),
            STATUS_PANIC => Err(CallError {
                message: format!("the plugin panicked: {text}"),
                panicked: true,
            }),
            _ => Err(CallError {
                message: text,
                panicked: false,
            }),
        }
    }
}

/// Copies a plugin buffer and hands it back to the plugin to free.
fn take(vtable: &PluginVTable, buf: OwnedBuf) -> String {
    if buf.ptr.is_null() {
        return String::new();
    }
    // SAFETY: the plugin filled ptr/len; we copy before returning it.
    let text = String::from_utf8_lossy(unsafe { std::slice::from_raw_parts(buf.ptr, buf.len) })
        .into_owned();
    // SAFETY: the buffer was allocated by this plugin and is freed exactly once.
    unsafe { (vtable.free_buffer)(buf) };
    text
}
