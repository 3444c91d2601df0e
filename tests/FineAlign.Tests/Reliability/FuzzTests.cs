using System.Diagnostics;
using System.Text;
using System.Text.Json.Nodes;
using FineAlign.Data;
using FineAlign.Models;
using FineAlign.Tests.Support;

namespace FineAlign.Tests.Reliability;

/// <summary>
/// Seeded random mutations of valid files fed to the readers for a bounded time: each attempt must either
/// succeed or throw <see cref="FineAlignException"/> (never another exception type, never hang).
/// </summary>
public class FuzzTests
{
    // FINEALIGN_FUZZ_SECONDS / FINEALIGN_FUZZ_SEED run longer or other campaigns by hand; the suite uses 2 s and seed 0.
    private static readonly int Seed = int.TryParse(Environment.GetEnvironmentVariable("FINEALIGN_FUZZ_SEED"), out int s) ? s : 0;
    private static readonly TimeSpan Budget = TimeSpan.FromSeconds(Environment.GetEnvironmentVariable("FINEALIGN_FUZZ_SECONDS") is { } s ? double.Parse(s, System.Globalization.CultureInfo.InvariantCulture) : 2.0);

    private const string ValidJsonl =
        "{\"prompt\": \"The food was\", \"completion\": \" great and fresh.\"}\n" +
        "{\"prompt\": \"Service:\", \"completion\": \" slow, but friendly \\u00e9\\u00e8.\"}\n" +
        "\n" +
        "{\"prompt\": \"Ambience\", \"completion\": \" cosy\", \"score\": 0.75, \"input_ids\": [1, 2, 3]}\n";

    private const string ValidMessages =
        "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"assistant\", \"content\": \"Hello!\"}]}\n";

    [Fact]
    public void Jsonl_readers_give_only_clean_errors()
    {
        using var tmp = TestPaths.NewTempDir();
        string path = Path.Combine(tmp.Path, "data.jsonl");
        var seeds = new[] { Encoding.UTF8.GetBytes(ValidJsonl), Encoding.UTF8.GetBytes(ValidMessages + ValidMessages) };
        int n = Run(seed: 11 + Seed, minimum: 201, (rng, i) =>
        {
            File.WriteAllBytes(path, Mutate(rng, seeds[i % seeds.Length], textual: true));
            return () =>
            {
                _ = SftReader.Read(path).ToList();
                foreach (var line in JsonlReader.Read(path))
                {
                    // The typed accessors other readers use, on whatever fields survived.
                    if (line.Object.ContainsKey("score")) _ = line.RequireNumber(path, "score");
                    if (line.Object.ContainsKey("input_ids")) _ = line.RequireIntArray(path, "input_ids");
                }
            };
        });
        Assert.True(n > 200, $"only {n} mutations ran");
    }

    [Fact]
    public void Safetensors_reader_gives_only_clean_errors()
    {
        using var tmp = TestPaths.NewTempDir();
        byte[] valid = File.ReadAllBytes(Path.Combine(BadModelFolders.Fixture, "model.safetensors"));
        var (header, data) = BadModelFolders.Split(valid);
        int headerEnd = 8 + (int)BitConverter.ToInt64(valid, 0);
        int n = Run(seed: 12 + Seed, minimum: 101, (rng, i) =>
        {
            string path = Path.Combine(tmp.Path, $"m{i % 4}.safetensors");
            byte[] bytes = (i % 3) switch
            {
                0 => BadModelFolders.Join(MutateHeader(rng, (JsonObject)header.DeepClone()), data),
                1 => MutateRegion(rng, valid, 0, headerEnd),   // raw bytes of the length prefix and the JSON header
                _ => Mutate(rng, valid, textual: false),
            };
            File.WriteAllBytes(path, bytes);
            return () =>
            {
                using var f = SafeTensorsFile.Open(path);
                foreach (var name in f.Entries.Keys) f.Read(name).Dispose();
            };
        });
        Assert.True(n > 100, $"only {n} mutations ran");
    }

    [Fact]
    public void Config_reader_gives_only_clean_errors_and_never_allocates_an_absurd_model()
    {
        using var tmp = TestPaths.NewTempDir();
        string path = Path.Combine(tmp.Path, "config.json");
        byte[] valid = File.ReadAllBytes(Path.Combine(BadModelFolders.Fixture, "config.json"));
        var obj = JsonNode.Parse(valid)!.AsObject();
        int built = 0;
        int n = Run(seed: 13 + Seed, minimum: 101, (rng, i) =>
        {
            File.WriteAllBytes(path, i % 2 == 0
                ? Encoding.UTF8.GetBytes(MutateHeader(rng, (JsonObject)obj.DeepClone()).ToJsonString())
                : Mutate(rng, valid, textual: true));
            return () =>
            {
                var config = ModelConfig.Load(path);
                ModelFactory.EnsureFitsInMemory(config, TorchSharp.torch.ScalarType.Float32, path);
                // Build the small ones: a config that validates must also construct.
                if (config.ParameterCount() < 300_000) { using var m = ModelFactory.Construct(config); built++; }
            };
        });
        Assert.True(n > 100, $"only {n} mutations ran");
        Assert.True(built > 0);
    }

    /// <summary>Tokenizer folders (byte, SentencePiece, tokenizer.json BPE, vocab+merges) with one file mutated.</summary>
    [Fact]
    public void Tokenizer_loader_gives_only_clean_errors()
    {
        using var tmp = TestPaths.NewTempDir();
        var kinds = new (string Name, Action<string> Write)[]
        {
            ("byte", d => new FineAlign.Text.ByteTokenizer().Save(d)),
            ("sentencepiece", d => FineAlign.Tests.Text.TinyTokenizerFiles.WriteSentencePiece(d)),
            ("tokenizer-json", d => FineAlign.Tests.Text.TinyTokenizerFiles.WriteTokenizerJson(d)),
            ("vocab-merges", d => FineAlign.Tests.Text.TinyTokenizerFiles.WriteVocabMerges(d)),
        };
        var originals = kinds.Select(k =>
        {
            string d = Path.Combine(tmp.Path, "valid-" + k.Name);
            Directory.CreateDirectory(d);
            k.Write(d);
            return Directory.GetFiles(d).ToDictionary(f => Path.GetFileName(f), File.ReadAllBytes);
        }).ToArray();
        int n = Run(seed: 14 + Seed, minimum: 51, (rng, i) =>
        {
            var files = originals[i % originals.Length];
            string dir = Path.Combine(tmp.Path, $"t{i % 8}");
            if (Directory.Exists(dir)) Directory.Delete(dir, true);
            Directory.CreateDirectory(dir);
            string victim = files.Keys.OrderBy(k => k, StringComparer.Ordinal).ElementAt(rng.Next(files.Count));
            foreach (var (name, bytes) in files)
            {
                byte[] content = bytes;
                if (name == victim)
                    content = name.EndsWith(".json", StringComparison.Ordinal) && rng.Next(2) == 0 && JsonNode.Parse(bytes) is JsonObject o
                        ? Encoding.UTF8.GetBytes(MutateHeader(rng, o).ToJsonString())
                        : Mutate(rng, bytes, textual: !name.EndsWith(".model", StringComparison.Ordinal));
                File.WriteAllBytes(Path.Combine(dir, name), content);
            }
            return () =>
            {
                var tok = FineAlign.Text.TokenizerLoader.Load(dir);
                int[] ids = tok.Encode("Hello world, héllo!");
                _ = tok.Decode(ids);
            };
        });
        Assert.True(n > 50, $"only {n} mutations ran");
    }

    /// <summary>
    /// Runs attempts until the time budget is spent and at least <paramref name="minimum"/> ran (on a worker thread, so a hang fails the test instead of
    /// blocking it); returns the attempt count. <paramref name="make"/> writes the input and returns the read.
    /// </summary>
    private static int Run(int seed, int minimum, Func<Random, int, Action> make)
    {
        var rng = new Random(seed);
        int count = 0;
        string? failure = null;
        var work = Task.Run(() =>
        {
            var clock = Stopwatch.StartNew();
            // At least `minimum` attempts whatever the machine's load (a loaded CI core once ran too few in the budget), more while time is left.
            for (int i = 0; (clock.Elapsed < Budget || i < minimum) && i < 1_000_000; i++, count++)
            {
                var read = make(rng, i);
                try { read(); }
                catch (FineAlignException e)
                {
                    if (e.Message.Contains('\n')) { failure = $"attempt {i}: multi-line message {e.Message}"; return; }
                }
                catch (Exception e)
                {
                    failure = $"attempt {i} (seed {seed}): {e.GetType().Name}: {e.Message}\n{e.StackTrace}";
                    return;
                }
            }
        });
        Assert.True(work.Wait(Budget + TimeSpan.FromSeconds(60)), $"a reader hung (after {count} attempts)");
        Assert.True(failure is null, failure);
        return count;
    }

    /// <summary>1–4 random edits: flip/insert/delete bytes, cut the file, duplicate or drop a line, splice JSON tokens.</summary>
    private static byte[] Mutate(Random rng, byte[] input, bool textual)
    {
        var b = new List<byte>(input);
        string[] tokens = ["NaN", "1e999", "-1", "null", "[]", "{}", "\"", "\\u0000", "\xff", ",", "99999999999999999999", "\"prompt\": 1,", "[[[[["];
        for (int edits = rng.Next(1, 5); edits > 0 && b.Count > 0; edits--)
        {
            int at = rng.Next(b.Count);
            switch (rng.Next(textual ? 7 : 5))
            {
                case 0: b[at] ^= (byte)(1 << rng.Next(8)); break;
                case 1: b[at] = (byte)rng.Next(256); break;
                case 2: b.Insert(at, (byte)rng.Next(256)); break;
                case 3: b.RemoveRange(at, Math.Min(rng.Next(1, 16), b.Count - at)); break;
                case 4: b.RemoveRange(at, b.Count - at); break;
                case 5: b.InsertRange(at, Encoding.Latin1.GetBytes(tokens[rng.Next(tokens.Length)])); break;
                default:
                {
                    var lines = Encoding.UTF8.GetString(b.ToArray()).Split('\n').ToList();
                    int l = rng.Next(lines.Count);
                    if (rng.Next(2) == 0) lines.Insert(l, lines[l]); else lines.RemoveAt(l);
                    b = new List<byte>(Encoding.UTF8.GetBytes(string.Join('\n', lines)));
                    break;
                }
            }
        }
        return b.ToArray();
    }

    private const string Header = "0123456789-.e\"[]{},:";

    private static byte[] MutateRegion(Random rng, byte[] input, int start, int end)
    {
        var b = (byte[])input.Clone();
        for (int edits = rng.Next(1, 4); edits > 0; edits--)
        {
            int at = rng.Next(start, end);
            b[at] = rng.Next(2) == 0 ? (byte)(b[at] ^ (1 << rng.Next(8))) : (byte)Header[rng.Next(Header.Length)];
        }
        return b;
    }

    /// <summary>Structure-aware: replace a value somewhere in the JSON with a hostile one (huge, negative, wrong type...).</summary>
    private static JsonObject MutateHeader(Random rng, JsonObject root)
    {
        JsonNode?[] hostile =
        [
            -1, 0, 1, 3, long.MaxValue, 1L << 40, int.MaxValue, 1e300, -0.5, "F32", "F8_E4M3", "I32", "BOOL", "", "../../etc/passwd",
            null, true, new JsonArray(), new JsonArray(1, 2), new JsonArray(-1), new JsonArray(1L << 31, 1L << 31), new JsonObject(),
            "llama", "gpt2", "qwen2", "bfloat16", 4_000_000, 65_536, 1_000_000,
        ];
        for (int edits = rng.Next(1, 4); edits > 0; edits--)
        {
            // Walk down to a random container, then overwrite, add or remove one of its entries.
            JsonNode node = root;
            while (true)
            {
                var children = node switch
                {
                    JsonObject o => o.Select(p => p.Value).ToList(),
                    JsonArray a => a.ToList(),
                    _ => [],
                };
                var deeper = children.Where(c => c is JsonObject or JsonArray).ToList();
                if (deeper.Count == 0 || rng.Next(3) == 0) break;
                node = deeper[rng.Next(deeper.Count)]!;
            }
            JsonNode? value = hostile[rng.Next(hostile.Length)]?.DeepClone();
            if (node is JsonObject obj && obj.Count > 0)
            {
                string key = obj.ElementAt(rng.Next(obj.Count)).Key;
                switch (rng.Next(4))
                {
                    case 0: obj.Remove(key); break;
                    case 1: obj["x" + rng.Next(100)] = value; break;
                    default: obj[key] = value; break;
                }
            }
            else if (node is JsonArray arr && arr.Count > 0) arr[rng.Next(arr.Count)] = value;
        }
        return root;
    }
}
