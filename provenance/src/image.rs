//! An image's operating-system packages, read from its layers (OCI image-spec `layer.md`: each layer a tar,
//! gzip-compressed or not, applied over the ones before; `.wh.<name>` removes `<name>` of the layers below,
//! `.wh..wh..opq` empties its directory of them). Only the package databases are kept: dpkg's status file,
//! apk's installed database and `os-release` for the distribution's id.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};

use crate::spdx::{self, OsPackage};

/// The files read from the layers, by clean path.
pub const DATABASE_FILES: [&str; 4] =
    ["var/lib/dpkg/status", "lib/apk/db/installed", "etc/os-release", "usr/lib/os-release"];

/// A database file larger than this is passed over.
pub const MAX_DATABASE_BYTES: u64 = 64 << 20;

/// Why a layer could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("reading the layer: {0}")]
    Io(#[from] std::io::Error),
    #[error("the layer is compressed in a way this reader does not know (zstd?)")]
    Compression,
}

/// The package databases as the layers added so far leave them.
#[derive(Debug, Clone, Default)]
pub struct ImagePackages {
    files: BTreeMap<String, Vec<u8>>,
}

impl ImagePackages {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one layer (a tar, gzip-compressed or not), lowest layer first.
    pub fn add_layer(&mut self, layer: impl Read) -> Result<(), LayerError> {
        let mut reader = BufReader::with_capacity(64 * 1024, layer);
        let magic = reader.fill_buf()?.get(..4).map(<[u8]>::to_vec).unwrap_or_default();
        if magic.starts_with(&[0x1f, 0x8b]) {
            self.add_tar(flate2::read::MultiGzDecoder::new(reader))
        } else if magic == [0x28, 0xb5, 0x2f, 0xfd] {
            Err(LayerError::Compression)
        } else {
            self.add_tar(reader)
        }
    }

    fn add_tar(&mut self, tar: impl Read) -> Result<(), LayerError> {
        let mut removed: Vec<(String, bool)> = Vec::new();
        let mut added: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
        let mut archive = tar::Archive::new(tar);
        for entry in archive.entries()? {
            let mut entry = entry?;
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let Ok(Some(path)) = spdx::clean_path(&raw) else { continue };
            let (dir, name) = path.rsplit_once('/').unwrap_or(("", path.as_str()));
            if name == ".wh..wh..opq" {
                removed.push((dir.to_owned(), true));
                continue;
            }
            if let Some(hidden) = name.strip_prefix(".wh.") {
                removed.push((if dir.is_empty() { hidden.to_owned() } else { format!("{dir}/{hidden}") }, false));
                continue;
            }
            let wanted = DATABASE_FILES.contains(&path.as_str());
            let regular = entry.header().entry_type().is_file();
            if wanted && regular && entry.size() <= MAX_DATABASE_BYTES {
                let mut contents = Vec::with_capacity(entry.size() as usize);
                entry.read_to_end(&mut contents)?;
                added.insert(path, Some(contents));
            } else if wanted || DATABASE_FILES.iter().any(|file| file.starts_with(&format!("{path}/"))) {
                // Something else now stands at the file's path or at a directory above it.
                if !entry.header().entry_type().is_dir() {
                    added.insert(path, None);
                }
            }
        }
        // Removals apply to the layers below, then this layer's own entries.
        for (path, opaque) in removed {
            let prefix = if path.is_empty() { String::new() } else { format!("{path}/") };
            self.files.retain(|file, _| {
                if opaque {
                    !file.starts_with(&prefix)
                } else {
                    *file != path && !file.starts_with(&prefix)
                }
            });
        }
        for (path, contents) in added {
            let prefix = format!("{path}/");
            self.files.retain(|file, _| !file.starts_with(&prefix));
            match contents {
                Some(contents) => self.files.insert(path, contents),
                None => self.files.remove(&path),
            };
        }
        Ok(())
    }

    /// The distribution's id (`ID` of `os-release`), if the image has one.
    pub fn distro(&self) -> Option<String> {
        ["etc/os-release", "usr/lib/os-release"]
            .iter()
            .find_map(|file| self.files.get(*file))
            .and_then(|text| spdx::os_release_id(&String::from_utf8_lossy(text)))
    }

    /// The installed packages of the image's dpkg and apk databases.
    pub fn packages(&self) -> Vec<OsPackage> {
        let distro = self.distro();
        let mut packages = Vec::new();
        if let Some(status) = self.files.get("var/lib/dpkg/status") {
            packages.extend(spdx::parse_dpkg_status(&String::from_utf8_lossy(status), distro.as_deref()));
        }
        if let Some(installed) = self.files.get("lib/apk/db/installed") {
            packages.extend(spdx::parse_apk_installed(&String::from_utf8_lossy(installed), distro.as_deref()));
        }
        packages
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(entries: &[(&str, Option<&[u8]>)], gzip: bool) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, contents) in entries {
            let mut header = tar::Header::new_gnu();
            match contents {
                Some(data) => {
                    header.set_size(data.len() as u64);
                    builder.append_data(&mut header, path, *data).unwrap();
                }
                None => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_size(0);
                    builder.append_data(&mut header, path, &b""[..]).unwrap();
                }
            }
        }
        let tar = builder.into_inner().unwrap();
        if !gzip {
            return tar;
        }
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut encoder, &tar).unwrap();
        encoder.finish().unwrap()
    }

    const STATUS: &[u8] = b"Package: base-files\nStatus: install ok installed\nArchitecture: amd64\nVersion: 12.4+deb12u5\n\nPackage: libc6\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2.36-9\n";

    #[test]
    fn packages_as_the_top_layer_leaves_them() {
        let mut image = ImagePackages::new();
        image
            .add_layer(
                &layer(
                    &[("etc", None), ("./etc/os-release", Some(b"ID=debian\n")), ("var/lib/dpkg/status", Some(STATUS))],
                    true,
                )[..],
            )
            .unwrap();
        assert_eq!(image.distro().as_deref(), Some("debian"));
        let packages = image.packages();
        assert_eq!(packages.len(), 2);
        assert_eq!(packages[1].purl(), "pkg:deb/debian/libc6@2.36-9?arch=amd64");

        // A later layer rewrites the status file (uncompressed this time).
        image.add_layer(&layer(&[("var/lib/dpkg/status", Some(&STATUS[..STATUS.len() / 2]))], false)[..]).unwrap();
        assert_eq!(image.packages().len(), 1);

        // And a whiteout removes it; the opaque directory empties etc.
        image
            .add_layer(&layer(&[("var/lib/dpkg/.wh.status", Some(b"")), ("etc/.wh..wh..opq", Some(b""))], true)[..])
            .unwrap();
        assert!(image.packages().is_empty());
        assert_eq!(image.distro(), None);
    }

    #[test]
    fn an_opaque_directory_keeps_its_own_layers_entries() {
        let mut image = ImagePackages::new();
        image.add_layer(&layer(&[("lib/apk/db/installed", Some(b"P:old\nV:1\n"))], false)[..]).unwrap();
        image
            .add_layer(
                &layer(
                    &[
                        ("lib/apk/db/installed", Some(b"P:musl\nV:1.2.4-r2\nA:x86_64\n")),
                        ("lib/apk/db/.wh..wh..opq", Some(b"")),
                    ],
                    false,
                )[..],
            )
            .unwrap();
        let packages = image.packages();
        assert_eq!(packages.len(), 1);
        assert_eq!(packages[0].name, "musl");
        assert_eq!(packages[0].purl(), "pkg:apk/alpine/musl@1.2.4-r2?arch=x86_64");
    }

    #[test]
    fn a_zstd_layer_is_refused() {
        let mut image = ImagePackages::new();
        assert!(matches!(image.add_layer(&[0x28, 0xb5, 0x2f, 0xfd, 0, 0][..]), Err(LayerError::Compression)));
    }
}
