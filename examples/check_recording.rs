//! Used by `.ci/run`: fail unless a recording CSV is whole: it ends with a newline, every row
//! parses with as many fields as the header, and it has at least MIN rows.
fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(path), Some(min)) = (args.next(), args.next()) else {
        panic!("usage: check_recording CSV MIN_ROWS");
    };
    let min: usize = min.parse().expect("MIN_ROWS is a number");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(bytes.last(), Some(&b'\n'), "{path}: the last row is torn");
    let mut reader = csv::Reader::from_reader(bytes.as_slice());
    let fields = reader.headers().expect("a header").len();
    let mut rows = 0;
    for record in reader.records() {
        let record = record.unwrap_or_else(|e| panic!("{path}: row {}: {e}", rows + 1));
        assert_eq!(record.len(), fields, "{path}: row {}", rows + 1);
        rows += 1;
    }
    println!("{path}: {rows} whole rows of {fields} fields");
    assert!(
        rows >= min,
        "{path}: only {rows} rows, expected at least {min}"
    );
}
