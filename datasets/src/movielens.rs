//! `movielens`: multi-task recommendation samples from the 100,004 MovieLens
//! ratings (671 users, 9,066 movies) of R's dslabs package, which `make
//! movielens` writes to `dir/ratings.csv` (userId, movieId, rating,
//! timestamp, year, genres) from Debian's `r-cran-dslabs` 0.7.4.
//!
//! Each user's ratings, in time order, after the first `warmup`: the rated
//! movie is a positive candidate (`watch` = 1, `like` = rating ≥ 4) and
//! `negatives` movies the user never rated, drawn uniformly, are negative
//! candidates (`watch` = 0; `like` has no label there: its label mask is
//! false, so it is learnt and scored on rated movies only, like ESMM's CVR
//! on clicks). Behaviour sequences, from the ratings before the candidate's
//! time step: `seq.liked` the last `length` movies rated ≥ 4, `seq.other`
//! the last `length` rated below, oldest first, padded at the end (mask
//! `seq.<b>.mask`). Fields (int64 `[6]`): user, movie, the movie's first
//! genre, its year in 5-year bins from 1900, and the hour (UTC) and weekday
//! of the rating. Split by time: of each user's candidate steps, the last
//! `test` fraction is the test split and the `val` fraction before it the
//! validation split. Negatives are drawn from `seed`, so each split's are
//! fixed.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use taskweave_plugin_api::config::JsonSchema;
use taskweave_plugin_api::rng::SplitMix;

use crate::error::{unreadable, Error, Result};
use crate::recommend::{self, Rows};
use crate::{DataKind, Dataset, Footprint, Source};

/// `[data] kind = "movielens"`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct MovielensConfig {
    /// The folder `make movielens` fills, relative to the pipeline file.
    pub dir: String,
    /// Movies per behaviour sequence (the most recent).
    #[schemars(range(min = 1, max = 1000))]
    pub length: u32,
    /// Each user's first ratings, which only fill the sequences.
    #[schemars(range(max = 1000))]
    pub warmup: u32,
    /// Unrated movies drawn per rated one.
    #[schemars(range(max = 100))]
    pub negatives: u32,
    /// The fraction of each user's candidate steps, the latest, in the test split.
    #[schemars(range(min = 0.0, max = 0.5))]
    pub test: f64,
    /// The fraction before those in the validation split.
    #[schemars(range(min = 0.0, max = 0.5))]
    pub val: f64,
    /// Seed of the negatives.
    pub seed: u64,
}

impl Default for MovielensConfig {
    fn default() -> MovielensConfig {
        MovielensConfig {
            dir: "../data/movielens".into(),
            length: 10,
            warmup: 5,
            negatives: 1,
            test: 0.1,
            val: 0.1,
            seed: 0,
        }
    }
}

/// The `movielens` data kind.
pub struct Movielens;

inventory::submit! { DataKind::of::<Movielens>() }

/// One rating.
struct Rating {
    user: usize,
    movie: usize,
    rating: f64,
    time: i64,
}

/// What is known of a movie: its first genre and year bin.
#[derive(Clone, Copy)]
struct Movie {
    genre: usize,
    year: usize,
}

/// Year bins: 5 years wide from 1900, one for unknown or earlier years.
const YEAR_BINS: usize = 26;

fn year_bin(year: Option<i64>) -> usize {
    match year {
        Some(y) if y >= 1900 => (((y - 1900) / 5) as usize + 1).min(YEAR_BINS - 1),
        _ => 0,
    }
}

fn path(config: &MovielensConfig, dir: &Path) -> PathBuf {
    dir.join(&config.dir).join("ratings.csv")
}

/// The ratings of the CSV at `file`, ids made dense: (ratings sorted by
/// user then time, movies, users, genres).
fn read(file: &Path) -> Result<(Vec<Rating>, Vec<Movie>, usize, usize)> {
    let mut reader = csv::Reader::from_path(file).map_err(|e| match e.into_kind() {
        csv::ErrorKind::Io(io) => unreadable(file, &io),
        other => Error::File {
            path: file.to_path_buf(),
            message: format!("{other:?}"),
        },
    })?;
    let expected = ["userId", "movieId", "rating", "timestamp", "year", "genres"];
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| Error::File {
            path: file.to_path_buf(),
            message: format!("no header: {e}"),
        })?
        .iter()
        .map(str::to_string)
        .collect();
    if header != expected {
        return Err(Error::File {
            path: file.to_path_buf(),
            message: format!(
                "header {header:?}, expected {expected:?}: rebuild it with `make movielens`"
            ),
        });
    }
    let (mut users, mut movies, mut genres) = (HashMap::new(), HashMap::new(), HashMap::new());
    let mut known: Vec<Movie> = Vec::new();
    let mut ratings = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let row = i as u64 + 2;
        let record = record.map_err(|e| Error::File {
            path: file.to_path_buf(),
            message: format!("line {row}: {e}"),
        })?;
        let cell = |c: usize| record.get(c).unwrap_or("");
        let number = |c: usize| -> Result<f64> {
            cell(c).parse::<f64>().map_err(|_| Error::Cell {
                path: file.to_path_buf(),
                row,
                column: expected[c].into(),
                message: format!("`{}` is not a number", cell(c)),
            })
        };
        let (user, movie, rating, time) = (
            number(0)? as i64,
            number(1)? as i64,
            number(2)?,
            number(3)? as i64,
        );
        let year = cell(4).parse::<i64>().ok();
        let n = users.len();
        let user = *users.entry(user).or_insert(n);
        let first_genre = cell(5).split('|').next().unwrap_or("").to_string();
        let g = genres.len();
        let genre = *genres.entry(first_genre).or_insert(g);
        let m = movies.len();
        let movie = *movies.entry(movie).or_insert(m);
        if movie == known.len() {
            known.push(Movie {
                genre,
                year: year_bin(year),
            });
        }
        ratings.push(Rating {
            user,
            movie,
            rating,
            time,
        });
    }
    if ratings.is_empty() {
        return Err(Error::File {
            path: file.to_path_buf(),
            message: "holds no rating".into(),
        });
    }
    ratings.sort_by_key(|r| (r.user, r.time));
    Ok((ratings, known, users.len(), genres.len()))
}

impl Source for Movielens {
    const NAME: &'static str = "movielens";
    type Config = MovielensConfig;

    fn check(config: &MovielensConfig, dir: &Path) -> Result<()> {
        let file = path(config, dir);
        if file.is_file() {
            return Ok(());
        }
        Err(Error::config(
            "dir",
            format!(
                "{} not found. Run `make movielens` in the repository root (Debian's r-cran-dslabs 0.7.4, converted with rdata==1.1.0 from PyPI), or set data.dir to the folder holding ratings.csv (relative to the pipeline file)",
                file.display()
            ),
        ))
    }

    fn footprint(config: &MovielensConfig, _dir: &Path) -> Footprint {
        let rows = 100_004u128 * (1 + config.negatives as u128);
        Some((
            rows * (8 * (6 + 2 * config.length as u128) + 2 * config.length as u128 + 9),
            "data.length, data.negatives".into(),
        ))
    }

    fn load(config: &MovielensConfig, dir: &Path) -> Result<Dataset> {
        Self::check(config, dir)?;
        let (ratings, movies, users, genres) = read(&path(config, dir))?;
        let length = config.length as usize;
        let mut rng = SplitMix::at(config.seed, 0);
        let mut splits: [Rows; 3] = Default::default();
        let mut start = 0;
        while start < ratings.len() {
            let user = ratings[start].user;
            let end = start
                + ratings[start..]
                    .iter()
                    .take_while(|r| r.user == user)
                    .count();
            let history = &ratings[start..end];
            let seen: HashSet<usize> = history.iter().map(|r| r.movie).collect();
            let steps = history.len().saturating_sub(config.warmup as usize);
            let test = (steps as f64 * config.test).round() as usize;
            let val = (steps as f64 * config.val).round() as usize;
            for (i, r) in history.iter().enumerate().skip(config.warmup as usize) {
                let step = i - config.warmup as usize;
                let rows = &mut splits[match steps - step {
                    left if left <= test => 2,
                    left if left <= test + val => 1,
                    _ => 0,
                }];
                // The sequences before this step, oldest first.
                let before = &history[..i];
                let mut sequences: [Vec<i64>; 2] = Default::default();
                for (b, liked) in [true, false].into_iter().enumerate() {
                    let picked: Vec<i64> = before
                        .iter()
                        .filter(|p| (p.rating >= 4.0) == liked)
                        .map(|p| p.movie as i64)
                        .collect();
                    sequences[b] = picked[picked.len().saturating_sub(length)..].to_vec();
                }
                let hour = r.time.rem_euclid(86_400) / 3600;
                // 1970-01-01 was a Thursday: day 0 = Monday.
                let weekday = (r.time.div_euclid(86_400) + 3).rem_euclid(7);
                let mut candidates = vec![(r.movie, true)];
                while candidates.len() < 1 + config.negatives as usize && seen.len() < movies.len()
                {
                    let m = rng.below(movies.len() as u64) as usize;
                    if !seen.contains(&m) {
                        candidates.push((m, false));
                    }
                }
                for (movie, rated) in candidates {
                    let info = movies[movie];
                    rows.fields.extend([
                        user as i64,
                        movie as i64,
                        info.genre as i64,
                        info.year as i64,
                        hour,
                        weekday,
                    ]);
                    for (b, seq) in sequences.iter().enumerate() {
                        rows.push_sequence(b, seq, length);
                    }
                    rows.watch.push(f32::from(u8::from(rated)));
                    rows.like
                        .push(f32::from(u8::from(rated && r.rating >= 4.0)));
                    rows.rated.get_or_insert_with(Vec::new).push(rated);
                }
            }
            start = end;
        }
        for (name, rows) in ["train", "val", "test"].into_iter().zip(&splits) {
            if rows.watch.is_empty() {
                return Err(Error::config(
                    if name == "train" { "warmup" } else { name },
                    match name {
                        // The training split is what val and test leave after the warm-up.
                        "train" => {
                            "the train split is empty: lower data.warmup, data.val or data.test"
                                .to_string()
                        }
                        _ => format!(
                            "the {name} split is empty: lower data.warmup or raise data.{name}"
                        ),
                    },
                ));
            }
        }
        let field_vocab = vec![users, movies.len(), genres, YEAR_BINS, 24, 7];
        recommend::dataset(field_vocab, movies.len(), length, splits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two users: user 10 rates movies 1..=8 at times 1..=8 (ratings 5, 2,
    /// 4, 1, 4.5, 3, 5, 2), user 20 rates movies 9 and 1.
    fn fixture(dir: &Path) {
        let mut text = String::from("userId,movieId,rating,timestamp,year,genres\n");
        let ratings = [5.0, 2.0, 4.0, 1.0, 4.5, 3.0, 5.0, 2.0];
        for (i, r) in ratings.iter().enumerate() {
            text += &format!(
                "10,{},{r},{},1995,\"Comedy|Drama\"\n",
                i + 1,
                86_400 * 4 + 3600 * i + 1
            );
        }
        text += "20,9,4.0,5,,Horror\n20,1,1.0,6,1995,Comedy\n";
        std::fs::write(dir.join("ratings.csv"), text).unwrap();
    }

    fn config(dir: &Path) -> MovielensConfig {
        MovielensConfig {
            dir: dir.display().to_string(),
            length: 3,
            warmup: 2,
            negatives: 1,
            test: 0.2,
            val: 0.2,
            seed: 0,
        }
    }

    fn rows(t: &tch::Tensor) -> Vec<Vec<i64>> {
        let cols = t.size()[1] as usize;
        Vec::<i64>::try_from(t.flatten(0, -1))
            .unwrap()
            .chunks(cols)
            .map(<[i64]>::to_vec)
            .collect()
    }

    #[test]
    fn samples_follow_each_user_in_time_with_sequences_before_the_candidate() {
        let dir = tempfile::tempdir().unwrap();
        fixture(dir.path());
        let data = Movielens::load(&config(dir.path()), Path::new("/")).unwrap();
        // User 10: 6 candidate steps → 1 test, 1 val, 4 train; user 20: none.
        assert_eq!(
            (data.train.len(), data.val.len(), data.test.len()),
            (8, 2, 2)
        );
        let fields = rows(&data.test.inputs[0].1);
        // The last rating (movie 8, dense id 7, rating 2 at hour 7 of a Monday)
        // and one unrated negative (movie 9 is the only one).
        assert_eq!(fields[0], [0, 7, 0, 20, 7, 0]);
        assert_eq!(
            fields[1][1], 8,
            "the negative is the one movie user 10 never rated"
        );
        let liked = rows(&data.test.inputs[1].1);
        let liked_mask = Vec::<bool>::try_from(data.test.inputs[2].1.flatten(0, -1)).unwrap();
        let other = rows(&data.test.inputs[3].1);
        // Before movie 8: liked 1, 3, 5, 7 → the last three; other 2, 4, 6.
        assert_eq!(liked[0], [2, 4, 6]);
        assert_eq!(other[0], [1, 3, 5]);
        assert!(liked_mask[..3].iter().all(|&v| v));
        let watch = Vec::<f32>::try_from(&data.test.targets[0]).unwrap();
        let like = Vec::<f32>::try_from(&data.test.targets[1]).unwrap();
        let rated = Vec::<bool>::try_from(data.test.masks[1].as_ref().unwrap()).unwrap();
        assert_eq!(
            (watch, like, rated),
            (vec![1.0, 0.0], vec![0.0, 0.0], vec![true, false])
        );
        // The first training candidate (movie 3, liked): sequences of one each, padded.
        let train_liked = rows(&data.train.inputs[1].1);
        let mask = Vec::<bool>::try_from(data.train.inputs[2].1.flatten(0, -1)).unwrap();
        assert_eq!(train_liked[0], [0, 0, 0]);
        assert_eq!(&mask[..3], [true, false, false]);
        assert_eq!(
            Vec::<f32>::try_from(&data.train.targets[1]).unwrap()[0],
            1.0
        );
    }

    #[test]
    fn missing_files_and_bad_cells_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let e = Movielens::check(&config(dir.path()), Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("data.dir: ") && e.contains("make movielens"),
            "{e}"
        );
        std::fs::write(
            dir.path().join("ratings.csv"),
            "userId,movieId,rating,timestamp,year,genres\n1,2,x,3,,Drama\n",
        )
        .unwrap();
        let e = Movielens::load(&config(dir.path()), Path::new("/"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("row 2, column `rating`: `x` is not a number"),
            "{e}"
        );
    }
}
