using FineAlign.Data;
using FineAlign.Models;
using FineAlign.Tests.Cli;
using FineAlign.Tests.Support;
using FineAlign.Text;

namespace FineAlign.Tests.Reliability;

/// <summary>
/// The input classes of issue #14 through the real commands (in-process): out-of-vocabulary ids in every pre-tokenised
/// reader, lone surrogate escapes, numbers that overflow float32, over-long lines, non-regular files where a file is
/// expected, late checks moved to read time, and messages in the user's words. Each bad input must give exactly one
/// line "error: …" naming file, line and field, exit 1, and leave no output folder behind.
/// </summary>
[Collection("Serial torch RNG")]
public class HostileInputTests
{
    internal static string Hostile => Path.Combine(BadModelFolders.Inputs, "hostile");

    // file → (command, phrase the one error line must contain besides the file name)
    public static readonly Dictionary<string, (string Command, string Phrase)> Files = new()
    {
        ["dpo-ids-out-of-vocab.jsonl"] = ("dpo", ":2: field 'chosen_input_ids': element 1: token id 300 is outside the vocabulary [0, 261)"),
        ["rm-ids-negative.jsonl"] = ("rm", ":1: field 'rejected_input_ids': element 0: token id -3"),
        ["kto-ids-out-of-vocab.jsonl"] = ("kto", ":1: field 'completion_input_ids': element 0: token id 999"),
        ["kto-pairs-ids-out-of-vocab.jsonl"] = ("kto", ":1: field 'rejected_input_ids': element 0: token id 100000"),
        ["bco-ids-negative.jsonl"] = ("bco", ":2: field 'prompt_input_ids': element 0: token id -1"),
        ["tlcr-ids-out-of-vocab.jsonl"] = ("tlcr-train", ":1: field 'input_ids': element 2: token id 5000"),
        ["sft-lone-surrogate.jsonl"] = ("sft", ":2: field 'completion': holds a lone UTF-16 surrogate escape"),
        ["dpo-lone-surrogate-in-message.jsonl"] = ("dpo", ":1: field 'content': holds a lone UTF-16 surrogate escape"),
        ["kto-surrogate-key.jsonl"] = ("kto", ":1: a property name holds a lone UTF-16 surrogate"),
        ["dpo-margin-1e300.jsonl"] = ("dpo", ":2: field 'margin': 1E+300 does not fit float32"),
        ["rm-score-overflow.jsonl"] = ("rm", ":1: field 'score_chosen − score_rejected': 6E+38 does not fit float32"),
        ["alol-reward-overflow.jsonl"] = ("alol", ":1: field 'reward': 1E+39 does not fit float32"),
        ["sft-json-error.jsonl"] = ("sft", ":2: invalid JSON: '\"' is invalid after a value"),
    };

    public static TheoryData<string> Cases() => new(Files.Keys);

    private static readonly Lazy<string> TinyModelDir = new(() =>
    {
        string dir = Path.Combine(Path.GetTempPath(), $"finealign-hostile-tiny-{Environment.ProcessId}");
        if (!File.Exists(Path.Combine(dir, "config.json")))
        {
            var tok = new ByteTokenizer();
            using var model = ModelFactory.Create(ModelPresets.Create("tiny", tok, 48), 3);
            ModelIO.Save(model, dir, tok);
        }
        AppDomain.CurrentDomain.ProcessExit += (_, _) => { try { Directory.Delete(dir, true); } catch (IOException) { } };
        return dir;
    });

    internal static string TinyModel => TinyModelDir.Value;

    internal static string[] Train(string command, string outDir, params string[] extra) =>
    [
        command, "--out", outDir, "--model", TinyModel, "--max-steps", "1", "--batch-size", "2", "--eval-batch-size", "2",
        "--threads", "1", .. command == "sft" ? new[] { "--samples", "0" } : [], .. extra,
    ];

    [Fact]
    public void Every_hostile_input_file_is_used()
    {
        var files = Directory.GetFiles(Hostile, "*.jsonl").Select(Path.GetFileName).Order();
        Assert.Equal(files, Files.Keys.Order());
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Hostile_data_is_one_line_naming_file_line_and_field_and_leaves_no_output(string file)
    {
        using var tmp = TestPaths.NewTempDir();
        var (command, phrase) = Files[file];
        string data = Path.Combine(Hostile, file), outDir = Path.Combine(tmp.Path, "run");
        var r = CliRunner.Run(Train(command, outDir, "--data", data));
        MalformedInputTests.AssertOneLineError(r, data, phrase);
        Assert.DoesNotContain("LineNumber", r.Err);   // System.Text.Json's 0-based position would contradict ours
        Assert.False(Directory.Exists(outDir), $"{command} left {outDir} behind for bad data");
    }

    [Fact]
    public void A_valid_surrogate_pair_escape_is_text_not_an_error()
    {
        using var tmp = TestPaths.NewTempDir();
        string data = Path.Combine(tmp.Path, "emoji.jsonl");
        File.WriteAllText(data, "{\"prompt\":\"a\",\"completion\":\"smile \\ud83d\\ude00\"}\n");
        var line = Assert.Single(JsonlReader.Read(data));
        Assert.Equal("smile \U0001F600", line.RequireString(data, "completion"));
    }

    [Fact]
    public void A_line_over_the_limit_is_refused_naming_file_line_and_the_limit()
    {
        using var tmp = TestPaths.NewTempDir();
        string data = Path.Combine(tmp.Path, "long.jsonl"), outDir = Path.Combine(tmp.Path, "run");
        File.WriteAllText(data, "{\"prompt\":\"a\",\"completion\":\"b\"}\n{\"prompt\":\"a\",\"completion\":\"" + new string('x', 300) + "\"}\n");
        var r = CliRunner.Run([.. Train("sft", outDir, "--data", data), "--max-line-bytes", "100"]);
        string err = MalformedInputTests.AssertOneLineError(r, data, ":2: line is longer than the limit of 100 bytes");
        Assert.Contains("--max-line-bytes", err);
        Assert.False(Directory.Exists(outDir));
        // The limit is per invocation: the next run without the flag reads the same file.
        Assert.Equal(2, JsonlReader.Read(data).Count());
    }

    [Fact]
    public void A_file_without_newlines_stops_at_the_limit_instead_of_growing()
    {
        using var tmp = TestPaths.NewTempDir();
        string data = Path.Combine(tmp.Path, "endless.jsonl");
        File.WriteAllBytes(data, new byte[3 << 20]);   // 3 MiB of zero bytes, no newline
        long before = GC.GetAllocatedBytesForCurrentThread();
        JsonlReader.MaxLineBytesOverride = 1 << 20;
        try
        {
            var e = Assert.Throws<DataFormatException>(() => JsonlReader.Read(data).ToList());
            Assert.Contains(":1: line is longer than the limit of 1,048,576 bytes", e.Message);
        }
        finally { JsonlReader.MaxLineBytesOverride = null; }
        // The buffer never grows far past the limit: ~2 MiB allocated for a 1 MiB limit, not the 3 MiB file.
        Assert.True(GC.GetAllocatedBytesForCurrentThread() - before < 3L << 20, "the reader held more than the limit");
    }

    [Fact]
    public void A_long_line_costs_a_small_multiple_of_its_length()
    {
        using var tmp = TestPaths.NewTempDir();
        string data = Path.Combine(tmp.Path, "big.jsonl");
        int n = 8 << 20;
        File.WriteAllText(data, "{\"prompt\":\"a\",\"completion\":\"" + new string('x', n) + "\"}\n");
        long before = GC.GetAllocatedBytesForCurrentThread();
        int length = 0;
        foreach (var line in JsonlReader.Read(data)) length += line.RequireString(data, "completion").Length;
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Equal(n, length);
        // Buffer growth (≤ 2× the line in total), the document's copy (1×), the UTF-16 string (2×): about 5×.
        Assert.True(allocated < 7L * n, $"reading an {n >> 20} MiB line allocated {allocated / (double)n:F1}× its length");
    }

    [Theory]
    [InlineData("/dev/zero", "is a character device, not a regular file")]
    [InlineData("folder", "is a folder, expected a file")]
    [InlineData("fifo", "is a named pipe (FIFO), not a regular file")]
    public void Data_that_is_not_a_regular_file_is_refused_before_reading(string kind, string phrase)
    {
        using var tmp = TestPaths.NewTempDir();
        string data = kind switch
        {
            "folder" => Directory.CreateDirectory(Path.Combine(tmp.Path, "data.jsonl")).FullName,
            "fifo" => MakeFifo(Path.Combine(tmp.Path, "pipe.jsonl")),
            _ => kind,
        };
        string outDir = Path.Combine(tmp.Path, "run");
        var r = CliRunner.Run(Train("sft", outDir, "--data", data));
        MalformedInputTests.AssertOneLineError(r, data, phrase);
        Assert.DoesNotContain("not found", r.Err);
        Assert.False(Directory.Exists(outDir));
    }

    [Theory]
    [InlineData("tokenizer_config.json")]
    [InlineData("tokenizer.json")]
    [InlineData("config.json")]
    public void A_model_file_that_is_a_fifo_is_refused_by_name(string file)
    {
        using var tmp = TestPaths.NewTempDir();
        string dir = Path.Combine(tmp.Path, "model");
        CopyFolder(TinyModel, dir);
        File.Delete(Path.Combine(dir, file));
        // A FIFO in the folder (a link to /dev/zero is refused earlier, as a link leaving the model folder).
        MakeFifo(Path.Combine(dir, file));
        var r = CliRunner.Run("generate", "--model", dir, "--prompt", "hello", "--max-new-tokens", "2");
        MalformedInputTests.AssertOneLineError(r, file, "is a named pipe (FIFO), not a regular file");
    }

    [Fact]
    public void Eos_token_id_outside_the_vocabulary_is_refused_when_the_config_is_read()
    {
        using var tmp = TestPaths.NewTempDir();
        string dir = Path.Combine(tmp.Path, "model");
        CopyFolder(TinyModel, dir);
        string cfg = Path.Combine(dir, "config.json");
        var o = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(cfg))!.AsObject();
        o["eos_token_id"] = 5000;
        File.WriteAllText(cfg, o.ToJsonString());
        var r = CliRunner.Run("generate", "--model", dir, "--prompt", "hello", "--max-new-tokens", "2");
        MalformedInputTests.AssertOneLineError(r, "config.json", "'eos_token_id' = 5000 is outside the vocabulary");
    }

    [Theory]
    [InlineData("add_bos_token", "\"yes\"", "field 'add_bos_token': expected true or false")]
    [InlineData("eos_token", "5", "field 'eos_token': expected a string")]
    [InlineData("chat_template", "3", "field 'chat_template': expected a string")]
    public void Wrong_typed_tokenizer_config_fields_are_errors_not_ignored(string key, string json, string phrase)
    {
        using var tmp = TestPaths.NewTempDir();
        string dir = Path.Combine(tmp.Path, "model");
        CopyFolder(TinyModel, dir);
        string cfg = Path.Combine(dir, "tokenizer_config.json");
        var o = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(cfg))!.AsObject();
        o[key] = System.Text.Json.Nodes.JsonNode.Parse(json);
        File.WriteAllText(cfg, o.ToJsonString());
        var r = CliRunner.Run("generate", "--model", dir, "--prompt", "hello", "--max-new-tokens", "2");
        MalformedInputTests.AssertOneLineError(r, "tokenizer_config.json", phrase);
    }

    [Fact]
    public void A_ppo_prompt_longer_than_the_context_is_a_line_error_with_the_hint_and_no_files()
    {
        using var tmp = TestPaths.NewTempDir();
        string prompts = Path.Combine(tmp.Path, "prompts.jsonl"), outDir = Path.Combine(tmp.Path, "ppo");
        File.WriteAllText(prompts, "{\"prompt\":\"short\"}\n{\"prompt\":\"" + new string('y', 60) + "\"}\n");
        var r = CliRunner.Run("ppo", "--policy", TinyModel, "--prompts", prompts, "--out", outDir, "--steps", "1",
            "--max-new-tokens", "8", "--threads", "1");
        string err = MalformedInputTests.AssertOneLineError(r, prompts, ":2: field 'prompt': 61 tokens + --max-new-tokens 8 exceed the model's context of 48");
        Assert.Contains("--max-prompt-length 40", err);
        Assert.False(Directory.Exists(outDir));
    }

    [Fact]
    public void Resume_from_a_folder_that_is_not_a_checkpoint_names_the_flag_and_writes_nothing()
    {
        using var tmp = TestPaths.NewTempDir();
        string notCheckpoint = Directory.CreateDirectory(Path.Combine(tmp.Path, "somewhere")).FullName, outDir = Path.Combine(tmp.Path, "run");
        var r = CliRunner.Run(Train("sft", outDir, "--resume-from", notCheckpoint));
        MalformedInputTests.AssertOneLineError(r, notCheckpoint, "--resume-from");
        Assert.DoesNotContain("resume_from_checkpoint", r.Err);
        Assert.False(Directory.Exists(outDir));   // no training_args.json, no folder
    }

    [Fact]
    public void One_typo_in_a_flag_prints_one_error_line_with_a_suggestion()
    {
        var r = CliRunner.Run("sft", "--lerning-rate", "1e-3");
        Assert.Equal(2, r.Code);
        var errors = CliRunner.Lines(r.Err).Where(l => l.StartsWith("error:")).ToList();
        Assert.Equal("error: unknown option '--lerning-rate' (did you mean '--learning-rate'?)", Assert.Single(errors));
    }

    [Fact]
    public void Enum_values_are_listed_as_typed_on_the_command_line()
    {
        var r = CliRunner.Run("sft", "--lr-scheduler", "cosin");
        Assert.Equal(2, r.Code);
        string err = Assert.Single(CliRunner.Lines(r.Err), l => l.StartsWith("error:"));
        Assert.Equal("error: option --lr-scheduler: 'cosin' is not one of constant, linear, cosine", err);
    }

    [Fact]
    public void A_missing_model_folder_is_named_by_its_flag_not_as_a_tokenizer_folder()
    {
        using var tmp = TestPaths.NewTempDir();
        string missing = Path.Combine(tmp.Path, "missing");
        var r = CliRunner.Run("sft", "--model", missing, "--out", Path.Combine(tmp.Path, "run"));
        string err = MalformedInputTests.AssertOneLineError(r, missing, $"--model {missing}: model folder not found");
        Assert.DoesNotContain("tokenizer", err);
    }

    [Fact]
    public void Dpo_reports_progress_of_its_reference_log_prob_pass()
    {
        using var tmp = TestPaths.NewTempDir();
        string data = Path.Combine(tmp.Path, "pairs.jsonl"), outDir = Path.Combine(tmp.Path, "dpo");
        File.WriteAllLines(data, Enumerable.Range(0, 6).Select(i => $"{{\"prompt\":\"Item {i}:\",\"chosen\":\" good!\",\"rejected\":\" bad.\"}}"));
        var r = CliRunner.Run(Train("dpo", outDir, "--data", data, "--precompute-ref-log-probs"));
        Assert.True(r.Code == 0, r.Err + r.Out);
        Assert.Contains("reference log-probs (train) 2/6", r.Out);   // first batch of 2 (eval batch size)
        Assert.Contains("reference log-probs (train) 6/6 (100%)", r.Out);
    }

    internal static string MakeFifo(string path)
    {
        using var p = System.Diagnostics.Process.Start("mkfifo", [path])!;
        p.WaitForExit();
        Assert.Equal(0, p.ExitCode);
        return path;
    }

    internal static void CopyFolder(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var f in Directory.GetFiles(from)) File.Copy(f, Path.Combine(to, Path.GetFileName(f)));
    }
}
