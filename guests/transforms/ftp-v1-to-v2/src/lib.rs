//! FTP sessions version 1 → 2: a control session gains a `REST` offset (none), a transfer
//! becomes a record of kind, path, offset and bytes moved.
//!
//! The conversion FTP 2.0.0 carries as a migration, as a component of its own, so that a
//! release that reads only version 2 can be reached from a running FTP 1.0.0, and so that the
//! chain `--transform ftp_v1_to_v2.wasm --transform ftp_v2_to_v3.wasm` takes release 1's state
//! to release 3's. The sessions are the section `tasuki.sessions`
//! ([`tasuki_guest::SESSIONS_SECTION`]), read and written as [`Sessions`] of the frozen types in
//! `ftp-states`. The app state (section `ftp`, version 1) is the same in both releases and
//! passes untouched.

use ftp_states::{v1, v2};
use tasuki_guest::session::Sessions;

struct FtpSessionsV1ToV2;

impl tasuki_guest::Transform for FtpSessionsV1ToV2 {
    const NAME: &'static str = "ftp-v1-to-v2";
    const SECTION: &'static str = tasuki_guest::SESSIONS_SECTION;
    const FROM: u32 = 1;
    const TO: u32 = 2;
    type Old = Sessions<v1::Conn>;
    type New = Sessions<v2::Conn>;

    fn transform(old: Sessions<v1::Conn>) -> Result<Sessions<v2::Conn>, String> {
        old.convert(|_, session| Ok(session.into()))
    }
}

tasuki_guest::export_transform!(FtpSessionsV1ToV2);

#[cfg(test)]
mod tests {
    use super::*;
    use tasuki_guest::transform::bindings::tasuki::server::types::{Section, Snapshot};
    use tasuki_guest::transform::run;

    #[test]
    fn a_waiting_download_and_an_upload_under_way_become_records() {
        let control = v1::Conn::Control(v1::Control {
            user: None,
            login: Some(v1::Login { name: "alice".into(), write: true }),
            cwd: "/docs".into(),
            local_ip: "127.0.0.1".into(),
            passive: None,
            data: None,
            waiting: Some(v1::Transfer::Retr { path: "/srv/a".into(), size: 10 }),
            busy: Some(4),
        });
        let data = v1::Conn::Data(v1::Data {
            control: 3,
            transfer: Some(v1::Transfer::Stor { path: "/srv/b".into(), written: 7 }),
        });
        let bytes = postcard::to_allocvec(&Sessions(vec![(3, control), (4, data)])).unwrap();
        let state = Section { name: "ftp".into(), version: 1, bytes: vec![0, 0, 0] };
        let sessions = Section { name: "tasuki.sessions".into(), version: 1, bytes };
        let out = run::<FtpSessionsV1ToV2>(Snapshot {
            app: "ftp".into(),
            app_version: "1.0.0".into(),
            sections: vec![state, sessions],
        })
        .unwrap();
        assert_eq!((out.sections[0].version, &out.sections[0].bytes[..]), (1, &[0, 0, 0][..]));
        assert_eq!(out.sections[1].version, 2);
        let new: Sessions<v2::Conn> = postcard::from_bytes(&out.sections[1].bytes).unwrap();
        let [(3, v2::Conn::Control(c)), (4, v2::Conn::Data(d))] = &new.0[..] else {
            panic!("{new:?}")
        };
        assert_eq!((c.cwd.as_str(), c.restart, c.busy), ("/docs", 0, Some(4)));
        let waiting = c.waiting.as_ref().unwrap();
        assert_eq!((&waiting.kind, waiting.offset), (&v2::Kind::Retr { len: 10 }, 0));
        let upload = d.transfer.as_ref().unwrap();
        assert_eq!(
            (&upload.kind, upload.path.as_str(), upload.bytes),
            (&v2::Kind::Stor, "/srv/b", 7)
        );
    }
}
