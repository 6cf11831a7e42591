//! FTP release 2 → 3, both sections that changed, in one component: the sessions (version 2 →
//! 3: each control session gains the time of its last command, unknown, so that release 3
//! starts its idle clock at the upgrade) and the app state (section `ftp`, version 1 → 2: the
//! counters, and no user's download allowance spent yet).
//!
//! Release 3 reads both old versions itself; this component is the same conversion outside
//! it, for a chain from release 1 (`--transform ftp_v1_to_v2.wasm --transform
//! ftp_v2_to_v3.wasm`) and for `tasuki migrate` of a saved snapshot. Both sides are the frozen
//! types of `ftp-states`.

use ftp_states::{v1, v2, v3};
use tasuki_guest::session::Sessions;

struct FtpSessionsV2ToV3;

impl tasuki_guest::Transform for FtpSessionsV2ToV3 {
    const NAME: &'static str = "ftp-v2-to-v3";
    const SECTION: &'static str = tasuki_guest::SESSIONS_SECTION;
    const FROM: u32 = 2;
    const TO: u32 = 3;
    type Old = Sessions<v2::Conn>;
    type New = Sessions<v3::Conn>;

    fn transform(old: Sessions<v2::Conn>) -> Result<Sessions<v3::Conn>, String> {
        old.convert(|_, session| Ok(v3::Conn::from_v2(session)))
    }
}

struct FtpStateV1ToV2;

impl tasuki_guest::Transform for FtpStateV1ToV2 {
    const NAME: &'static str = "ftp-v2-to-v3";
    const SECTION: &'static str = "ftp";
    const FROM: u32 = 1;
    const TO: u32 = 2;
    type Old = v1::Ftp;
    type New = v3::Ftp;

    fn transform(old: v1::Ftp) -> Result<v3::Ftp, String> {
        Ok(old.into())
    }
}

tasuki_guest::export_transform!(FtpSessionsV2ToV3, FtpStateV1ToV2);

#[cfg(test)]
mod tests {
    use super::*;
    use tasuki_guest::transform::bindings::tasuki::server::types::{Section, Snapshot};
    use tasuki_guest::transform::{run_all, sections};

    #[test]
    fn both_sections_are_rewritten() {
        let control = v2::Conn::Control(v2::Control {
            user: None,
            login: Some(v2::Login { name: "alice".into(), write: false }),
            cwd: "/".into(),
            local_ip: String::new(),
            passive: None,
            data: None,
            waiting: None,
            busy: None,
            restart: 9,
        });
        let state = v1::Ftp { downloads: 5, uploads: 6, listings: 7 };
        let out = run_all(
            Snapshot {
                app: "ftp".into(),
                app_version: "2.0.0".into(),
                sections: vec![
                    Section {
                        name: "ftp".into(),
                        version: 1,
                        bytes: postcard::to_allocvec(&state).unwrap(),
                    },
                    Section {
                        name: "tasuki.sessions".into(),
                        version: 2,
                        bytes: postcard::to_allocvec(&Sessions(vec![(1, control)])).unwrap(),
                    },
                ],
            },
            &[sections::<FtpSessionsV2ToV3>, sections::<FtpStateV1ToV2>],
        )
        .unwrap();
        assert_eq!((out.sections[0].version, out.sections[1].version), (2, 3));
        let state: v3::Ftp = postcard::from_bytes(&out.sections[0].bytes).unwrap();
        assert_eq!((state.downloads, state.uploads, state.listings), (5, 6, 7));
        assert!(state.users.is_empty());
        let sessions: Sessions<v3::Conn> = postcard::from_bytes(&out.sections[1].bytes).unwrap();
        let [(1, v3::Conn::Control(c))] = &sessions.0[..] else { panic!("{sessions:?}") };
        assert_eq!((c.restart, c.last_command_ms), (9, 0));
    }
}
