//! The smallest `typst::World` a proposal needs: one template source, one virtual `data.json`,
//! an optional logo, and fonts compiled into the binary. Nothing is read from the machine and
//! no package can be imported, so an untrusted template sees only its own data and the output
//! is the same on every machine.

use std::sync::LazyLock;

use typst::{
    Library, LibraryExt as _,
    diag::{FileError, FileResult},
    foundations::{Bytes, Datetime, Duration},
    syntax::{FileId, RootedPath, Source, VirtualPath, VirtualRoot},
    text::{Font, FontBook},
    utils::LazyHash,
};

/// DejaVu Sans: typst's bundled fonts have no sans-serif face.
const SANS_REGULAR: &[u8] = include_bytes!("../../fonts/DejaVuSans.ttf");
const SANS_BOLD: &[u8] = include_bytes!("../../fonts/DejaVuSans-Bold.ttf");

struct Fonts {
    book: LazyHash<FontBook>,
    fonts: Vec<Font>,
}

static FONTS: LazyLock<Fonts> = LazyLock::new(|| {
    let fonts: Vec<Font> = [SANS_REGULAR, SANS_BOLD]
        .into_iter()
        .chain(typst_assets::fonts())
        .flat_map(|data| Font::iter(Bytes::new(data)))
        .collect();
    Fonts { book: LazyHash::new(FontBook::from_fonts(&fonts)), fonts }
});

static LIBRARY: LazyLock<LazyHash<Library>> = LazyLock::new(|| LazyHash::new(Library::default()));

fn file_id(path: &str) -> FileId {
    let vpath = VirtualPath::new(path).expect("static virtual path");
    FileId::new(RootedPath::new(VirtualRoot::Project, vpath))
}

// File ids are interned for the life of the process, so the same three are reused by every render.
static MAIN: LazyLock<FileId> = LazyLock::new(|| file_id("/main.typ"));
static DATA: LazyLock<FileId> = LazyLock::new(|| file_id("/data.json"));
static LOGO: LazyLock<FileId> = LazyLock::new(|| file_id("/logo.svg"));
static ORIGINAL: LazyLock<FileId> = LazyLock::new(|| file_id("/original.pdf"));

pub struct ProposalWorld {
    main: Source,
    data: Bytes,
    logo: Option<Bytes>,
    original: Option<Bytes>,
    today: Datetime,
}

impl ProposalWorld {
    pub fn new(template: &str, data_json: Vec<u8>, logo_svg: Option<Vec<u8>>, today: Datetime) -> Self {
        Self {
            main: Source::new(*MAIN, template.to_owned()),
            data: Bytes::new(data_json),
            logo: logo_svg.map(Bytes::new),
            original: None,
            today,
        }
    }

    /// The PDF a signed copy is made of, as `/original.pdf`.
    pub fn with_original_pdf(mut self, pdf: Option<Vec<u8>>) -> Self {
        self.original = pdf.map(Bytes::new);
        self
    }
}

impl typst::World for ProposalWorld {
    fn library(&self) -> &LazyHash<Library> {
        &LIBRARY
    }

    fn book(&self) -> &LazyHash<FontBook> {
        &FONTS.book
    }

    fn main(&self) -> FileId {
        *MAIN
    }

    fn source(&self, id: FileId) -> FileResult<Source> {
        if id == *MAIN { Ok(self.main.clone()) } else { Err(not_available(id)) }
    }

    fn file(&self, id: FileId) -> FileResult<Bytes> {
        if id == *DATA {
            Ok(self.data.clone())
        } else if id == *LOGO {
            self.logo.clone().ok_or_else(|| not_available(id))
        } else if id == *ORIGINAL {
            self.original.clone().ok_or_else(|| not_available(id))
        } else if id == *MAIN {
            Ok(Bytes::from_string(self.main.clone()))
        } else {
            Err(not_available(id))
        }
    }

    fn font(&self, index: usize) -> Option<Font> {
        FONTS.fonts.get(index).cloned()
    }

    /// The proposal version's date, never the clock: the same version renders the same bytes.
    fn today(&self, _offset: Option<Duration>) -> Option<Datetime> {
        Some(self.today)
    }
}

fn not_available(id: FileId) -> FileError {
    match id.get().root() {
        VirtualRoot::Package(_) => FileError::Other(Some("packages are not available to proposal templates".into())),
        VirtualRoot::Project => FileError::NotFound(id.get().vpath().get_without_slash().into()),
    }
}
