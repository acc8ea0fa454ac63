//! Realistic client log lines: logins, zone loads, chat (including chat that merely
//! mentions crashes or disconnects), combat, system messages, and the real error texts.

use rand::Rng;
use rand::seq::IndexedRandom;

const PLAYERS: &[&str] = &["Keldo", "Vexa", "Tharn", "Miri", "Osk", "Brannik", "Lyss"];
const ZONES: &[&str] = &[
    "theed",
    "keren",
    "moenia",
    "mos_eisley",
    "anchorhead",
    "coronet",
    "tyrena",
];
const CREATURES: &[&str] = &["kaadu", "nuna", "womp rat", "gualama", "peko peko", "kusak"];
const CHAT: &[&str] = &[
    "lol my game crashed yesterday in the middle of a heroic",
    "anyone else lagging? getting rubberbanded hard",
    "got disconnected twice last night, server was rough",
    "WTS CDEF Carbine, good condition, 2k",
    "LFG nyax, need a medic",
    "my graphics error message went away after the driver update",
    "the server disconnected me during the crafting session lol",
    "grats on the level!",
];

/// One ordinary line of a running client.
pub fn ordinary(rng: &mut impl Rng) -> String {
    let p = PLAYERS.choose(rng).copied().unwrap_or("Keldo");
    let z = ZONES.choose(rng).copied().unwrap_or("theed");
    let c = CREATURES.choose(rng).copied().unwrap_or("kaadu");
    let chat = CHAT.choose(rng).copied().unwrap_or("hello");
    match rng.random_range(0..10) {
        0 => format!("[Chat] Spatial: {p}: {chat}"),
        1 => format!("[Chat] Guild: {p}: {chat}"),
        2 => format!("[Tell] {p} tells you, \"{chat}\""),
        3 => format!(
            "[Combat] You hit a {c} for {} points of damage.",
            rng.random_range(40..400)
        ),
        4 => format!("[Combat] A {c} attacks you but misses."),
        5 => format!("[System] You have entered {z}."),
        6 => format!(
            "[System] Loading terrain for {z} ({}%).",
            rng.random_range(10..100)
        ),
        7 => format!(
            "[Experience] You receive {} combat experience.",
            rng.random_range(20..200)
        ),
        8 => format!("[Loot] You loot a {c} hide."),
        _ => format!("[System] {p} has come online."),
    }
}

/// Lines of a successful login.
pub fn login() -> Vec<String> {
    vec![
        "[Net] Connecting to login server swgemu.example:44453".into(),
        "[Net] Connected to login server.".into(),
        "[Net] Connecting to zone server.".into(),
        "[System] Login successful. Welcome to Star Wars Galaxies.".into(),
    ]
}

/// The line logged for a disconnect.
pub const DISCONNECT: &str = "[Net] Connection to server lost. Please reconnect.";
/// The line logged for a ban (SWGEmu's message).
pub const BANNED: &str = "[Login] Login Error : Account Banned - You are banned from this galaxy.";
/// The line logged for an expired session key.
pub const SESSION_EXPIRED: &str =
    "[Login] Your session key is invalid, or has expired. Please re-login";
/// The line logged before a crash.
pub const CRASHED: &str = "[System] Game has crashed. Please restart the client.";
