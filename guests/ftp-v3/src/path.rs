//! Client paths: what a client names (absolute from the served root, or relative to its
//! working directory) resolved without touching the file system, so that no name can leave the
//! root (`..` stops there, as at a Unix file system's `/`). Symbolic links are left to the
//! sandbox: the served directory is one the host granted (`tasuki run --dir`), and the host
//! refuses to follow a link out of it, so a link pointing out answers 550 like a missing file.

/// A path as the client sees it: absolute, `/`-separated, no `.` or `..`, no trailing `/`
/// except the root itself; `None` if `..` would climb above the root (answered 550, as a name
/// that leads nowhere).
pub fn resolve(cwd: &str, name: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    let start = if name.starts_with('/') { "" } else { cwd };
    for part in start.split('/').chain(name.split('/')) {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            part => parts.push(part),
        }
    }
    Some(format!("/{}", parts.join("/")))
}

/// Where client path `path` (from [`resolve`]) is under the served root `root` (a guest path
/// such as `/srv`).
pub fn on_disk(root: &str, path: &str) -> String {
    if path == "/" { root.to_string() } else { format!("{}{path}", root.trim_end_matches('/')) }
}

/// The last part of a client path: the name a listing shows.
pub fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(cwd: &str, name: &str) -> String {
        resolve(cwd, name).unwrap()
    }

    #[test]
    fn relative_and_absolute_names_resolve_from_the_root_and_the_working_directory() {
        assert_eq!(ok("/", "a/b"), "/a/b");
        assert_eq!(ok("/a", "b/./c/"), "/a/b/c");
        assert_eq!(ok("/a/b", "/c"), "/c");
        assert_eq!(ok("/a/b", ".."), "/a");
        assert_eq!(ok("/a/b", "../.."), "/");
        assert_eq!(ok("/a", ""), "/a");
    }

    #[test]
    fn no_name_leaves_the_root() {
        assert_eq!(resolve("/", ".."), None);
        assert_eq!(resolve("/a", "../../.."), None);
        assert_eq!(resolve("/a", "b/../../../etc/passwd"), None);
        // An absolute name is under the root.
        assert_eq!(on_disk("/srv", &ok("/a", "/etc/passwd")), "/srv/etc/passwd");
        assert_eq!(on_disk("/srv", "/"), "/srv");
    }
}
