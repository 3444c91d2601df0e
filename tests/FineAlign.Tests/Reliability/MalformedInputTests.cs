using FineAlign.Tests.Cli;
using FineAlign.Tests.Support;

namespace FineAlign.Tests.Reliability;

/// <summary>
/// Every malformed input goes through the real CLI command that reads it and must give exit code 1, exactly one
/// stderr line "error: ..." naming the file (and line/field where there is one), and no new or changed output.
/// </summary>
[Collection("Serial torch RNG")]
public class MalformedInputTests
{
    // file → a phrase the message must contain besides the file name (line and field, or the problem).
    public static readonly Dictionary<string, string> SftFiles = new()
    {
        ["sft-truncated-line.jsonl"] = ":2: invalid JSON",
        ["sft-invalid-utf8.jsonl"] = ":2: invalid UTF-8",
        ["sft-latin1.jsonl"] = ":2: invalid UTF-8",
        ["sft-prompt-number.jsonl"] = ":1: field 'prompt': expected a string, got number 42",
        ["sft-completion-object.jsonl"] = ":1: field 'completion'",
        ["sft-empty-prompt.jsonl"] = ":2: field 'prompt': is empty",
        ["sft-empty-completion.jsonl"] = ":1: field 'completion': is empty",
        ["sft-missing-completion.jsonl"] = ":1: field 'completion': missing",
        ["sft-no-known-fields.jsonl"] = ":1: no SFT fields",
        ["sft-duplicate-key.jsonl"] = ":1: invalid JSON: Duplicate",
        ["sft-line-is-array.jsonl"] = ":1: expected a JSON object, got array",
        ["sft-mixed-formats.jsonl"] = ":2: format 'text' differs",
        ["sft-messages-bad-role.jsonl"] = ":1: field 'messages[1].role'",
        ["sft-messages-empty-content.jsonl"] = ":1: field 'messages[1].content': is empty",
        ["sft-messages-no-assistant.jsonl"] = ":1: field 'messages': no assistant message",
        ["sft-messages-not-a-list.jsonl"] = ":1: field 'messages': expected a list of messages",
        ["sft-messages-content-number.jsonl"] = ":1: field 'messages[1].content': expected a string",
        ["sft-empty-file.jsonl"] = "no examples",
        ["sft-only-blank-lines.jsonl"] = "no examples",
        ["sft-nan-literal.jsonl"] = ":2: invalid JSON",
        ["sft-text-null.jsonl"] = ":1: field 'text': expected a string, got null",
        ["sft-trailing-garbage.jsonl"] = ":1: invalid JSON",
        ["sft-deep-nesting.jsonl"] = ":1: invalid JSON",
        ["sft-over-long.jsonl"] = ":1: example is",
    };

    public static readonly Dictionary<string, string> LogprobsFiles = new()
    {
        ["logprobs-ids-fraction.jsonl"] = ":1: field 'input_ids': element 1: expected an integer, got number 2.5",
        ["logprobs-ids-nan-string.jsonl"] = ":2: field 'input_ids': element 1: expected an integer, got string",
        ["logprobs-ids-overflow.jsonl"] = ":1: field 'input_ids': element 1: expected an integer",
        ["logprobs-ids-out-of-vocab.jsonl"] = ":1: field 'input_ids': token id 99999 at position 1",
        ["logprobs-ids-negative.jsonl"] = ":1: field 'input_ids': token id -4",
        ["logprobs-ids-empty.jsonl"] = ":1: field 'input_ids': no tokens",
        ["logprobs-both-fields.jsonl"] = ":1: has both",
        ["logprobs-ids-string.jsonl"] = ":1: field 'input_ids': expected an array of integers, got string",
        ["logprobs-infinity-literal.jsonl"] = ":2: invalid JSON",
        ["logprobs-over-long.jsonl"] = ":1: field 'input_ids': 200 tokens exceed",
    };

    public static TheoryData<string> SftCases() => new(SftFiles.Keys);
    public static TheoryData<string> LogprobsCases() => new(LogprobsFiles.Keys);
    public static TheoryData<string> ModelCases() => new(BadModelFolders.Cases);

    [Fact]
    public void The_corpus_has_at_least_30_malformed_inputs_and_every_input_file_is_used()
    {
        Assert.True(SftFiles.Count + LogprobsFiles.Count + BadModelFolders.Cases.Length >= 30);
        var files = Directory.GetFiles(BadModelFolders.Inputs, "*.jsonl").Select(Path.GetFileName).ToHashSet();
        Assert.Equal(files.Order(), SftFiles.Keys.Concat(LogprobsFiles.Keys).Order());
        var configs = Directory.GetFiles(Path.Combine(BadModelFolders.Inputs, "configs")).Select(f => "cfg-" + Path.GetFileNameWithoutExtension(f));
        Assert.Equal(configs.Order(), BadModelFolders.Cases.Where(c => c.StartsWith("cfg-")).Order());
    }

    [Theory]
    [MemberData(nameof(SftCases))]
    public void Sft_data(string file)
    {
        using var tmp = TestPaths.NewTempDir();
        string data = Path.Combine(BadModelFolders.Inputs, file), outDir = Path.Combine(tmp.Path, "run");
        var r = CliRunner.Run("sft", "--data", data, "--out", outDir, "--init", "tiny", "--context-length", "96",
            "--max-length", "64", "--over-length", "error", "--batch-size", "4", "--max-steps", "1", "--samples", "0", "--seed", "5");
        AssertOneLineError(r, data, SftFiles[file]);
        Assert.False(Directory.Exists(outDir), "sft created its output folder for bad data");
    }

    [Theory]
    [MemberData(nameof(LogprobsCases))]
    public void Logprobs_input(string file)
    {
        using var tmp = TestPaths.NewTempDir();
        string input = Path.Combine(BadModelFolders.Inputs, file), output = Path.Combine(tmp.Path, "scores.jsonl");
        File.WriteAllText(output, "previous results\n");
        var r = CliRunner.Run("logprobs", "--model", BadModelFolders.Fixture, "--input", input, "--output", output, "--batch-size", "1");
        AssertOneLineError(r, input, LogprobsFiles[file]);
        Assert.Equal("previous results\n", File.ReadAllText(output));
        Assert.Single(Directory.GetFileSystemEntries(tmp.Path));   // no temp file left beside it
    }

    /// <summary>Each bad model folder through logprobs, generate and convert (the three --model readers).</summary>
    [Theory]
    [MemberData(nameof(ModelCases))]
    public void Model_folder(string name)
    {
        using var tmp = TestPaths.NewTempDir();
        var (folder, namedFile, problem) = BadModelFolders.Make(tmp.Path, name);
        string input = Path.Combine(tmp.Path, "ids.jsonl"), scores = Path.Combine(tmp.Path, "scores.jsonl"), converted = Path.Combine(tmp.Path, "converted");
        File.WriteAllText(input, "{\"input_ids\": [1, 5, 9]}\n");
        var before = Snapshot(tmp.Path);

        var runs = new[]
        {
            CliRunner.Run("logprobs", "--model", folder, "--input", input, "--output", scores),
            CliRunner.Run("generate", "--model", folder, "--prompt", "hi", "--max-new-tokens", "2"),
            CliRunner.Run("convert", "--model", folder, "--out", converted),
        };
        foreach (var r in runs)
        {
            var err = AssertOneLineError(r, namedFile, problem);
            Assert.Contains(name, err);   // the path names the folder of this case
        }
        Assert.Equal(before, Snapshot(tmp.Path));   // nothing created, nothing changed
    }

    /// <summary>config.json may carry trust_remote_code/auto_map (hub models do): they are ignored and no code is loaded.</summary>
    [Fact]
    public void Remote_code_fields_in_config_are_ignored_and_nothing_is_executed()
    {
        using var tmp = TestPaths.NewTempDir();
        string dir = BadModelFolders.ValidCopy(Path.Combine(tmp.Path, "remote"));
        var config = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "config.json")))!.AsObject();
        config["trust_remote_code"] = true;
        config["auto_map"] = new System.Text.Json.Nodes.JsonObject { ["AutoModelForCausalLM"] = "modeling_evil.EvilForCausalLM" };
        File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
        string marker = Path.Combine(tmp.Path, "pwned");
        File.WriteAllText(Path.Combine(dir, "modeling_evil.py"), $"open('{marker}', 'w').write('ran')\n");
        File.WriteAllText(Path.Combine(dir, "modeling_evil.cs"), "would not compile anyway");

        string input = Path.Combine(tmp.Path, "ids.jsonl");
        File.WriteAllText(input, "{\"input_ids\": [1, 5, 9]}\n");
        var r = CliRunner.Run("logprobs", "--model", dir, "--input", input);
        Assert.True(r.Code == 0, r.Err);
        Assert.False(File.Exists(marker));
        Assert.Single(CliRunner.Lines(r.Out));
    }

    internal static string AssertOneLineError((int Code, string Out, string Err) r, string file, string phrase)
    {
        Assert.True(r.Code == 1, $"exit {r.Code}; stdout: {r.Out}; stderr: {r.Err}");
        string[] lines = r.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(lines.Length == 1, "stderr is not one line:\n" + r.Err);
        string err = lines[0];
        Assert.StartsWith("error: ", err);
        Assert.DoesNotMatch(@"unexpected \w+Exception", err);   // an unexpected exception type is a bug, not a clean error
        Assert.Contains(Path.GetFileName(file), err);
        Assert.Contains(phrase, err);
        return err;
    }

    private static string Snapshot(string root) => string.Join("\n",
        Directory.EnumerateFileSystemEntries(root, "*", SearchOption.AllDirectories).Order()
            .Select(p => File.Exists(p) ? $"{p} {new FileInfo(p).Length} {File.GetLastWriteTimeUtc(p).Ticks}" : p));
}
