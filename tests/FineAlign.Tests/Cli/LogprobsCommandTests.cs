using System.Text.Json;
using System.Text.Json.Nodes;
using FineAlign.Tests.Support;
using static FineAlign.Tests.Cli.CommandFixtures;

namespace FineAlign.Tests.Cli;

public class LogprobsCommandTests
{
    private static (int[] Ids, float[] TokenLogprobs, double Sum) Expected(string fixture)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(TestPaths.RequireShared("fixtures/" + fixture), "expected.json")));
        var e = doc.RootElement;
        return (e.GetProperty("input_ids").EnumerateArray().Select(x => x.GetInt32()).ToArray(),
                e.GetProperty("token_logprobs").EnumerateArray().Select(x => x.GetSingle()).ToArray(),
                e.GetProperty("sequence_logprob").GetDouble());
    }

    [Theory]
    [InlineData("llama-tiny")]
    [InlineData("gpt2-tiny")]
    public void Matches_the_fixtures_expected_logprobs_also_in_a_padded_batch(string fixture)
    {
        var (ids, want, wantSum) = Expected(fixture);
        using var tmp = TestPaths.NewTempDir();
        string input = Path.Combine(tmp.Path, "in.jsonl"), output = Path.Combine(tmp.Path, "out.jsonl");
        // The short prefix shares a batch with the full sequence (right padding); a blank line is skipped.
        WriteLines(input, $"{{\"input_ids\": [{string.Join(",", ids)}]}}", "", $"{{\"input_ids\": [{string.Join(",", ids[..6])}]}}");
        var r = CliRunner.Run("logprobs", "--model", TestPaths.RequireShared("fixtures/" + fixture), "--input", input, "--output", output);
        Assert.True(r.Code == 0, r.Err);
        Assert.Contains("scored 2 sequences", r.Out);

        var lines = ReadJsonl(output);
        Assert.Equal(2, lines.Count);
        Assert.Equal(1, lines[0]["line"]!.GetValue<int>());
        Assert.Equal(3, lines[1]["line"]!.GetValue<int>());
        Assert.Equal(ids, Ints(lines[0]["input_ids"]));
        float[] got = Floats(lines[0]["token_logprobs"]);
        Assert.Equal(ids.Length - 1, got.Length);
        for (int t = 0; t < got.Length; t++) Assert.True(Math.Abs(got[t] - want[t]) < 1e-4, $"t={t}: {got[t]} vs {want[t]}");
        Assert.Equal(wantSum, lines[0]["sum"]!.GetValue<double>(), 1e-4);

        float[] prefix = Floats(lines[1]["token_logprobs"]);
        Assert.Equal(5, prefix.Length);
        for (int t = 0; t < 5; t++) Assert.True(Math.Abs(prefix[t] - want[t]) < 1e-4, $"prefix t={t}");
        Assert.Equal(prefix.Sum(x => (double)x), lines[1]["sum"]!.GetValue<double>(), 1e-5);
    }

    [Fact]
    public void Stdout_output_equals_file_output_and_batch_size_does_not_matter()
    {
        var (ids, _, _) = Expected("llama-tiny");
        using var tmp = TestPaths.NewTempDir();
        string input = Path.Combine(tmp.Path, "in.jsonl"), output = Path.Combine(tmp.Path, "out.jsonl");
        WriteLines(input, Enumerable.Range(2, 5).Select(n => $"{{\"input_ids\": [{string.Join(",", ids[..(n * 3)])}]}}").ToArray());
        string model = TestPaths.RequireShared("fixtures/llama-tiny");
        var toStdout = CliRunner.Run("logprobs", "-m", model, "-i", input, "--batch-size", "1");
        var toFile = CliRunner.Run("logprobs", "-m", model, "-i", input, "-o", output, "--batch-size", "4");
        Assert.Equal(0, toStdout.Code);
        Assert.Equal(0, toFile.Code);
        var a = ParseJsonl(toStdout.Out);
        var b = ReadJsonl(output);
        Assert.Equal(5, a.Count);
        for (int i = 0; i < 5; i++)
        {
            Assert.Equal(Ints(a[i]["input_ids"]), Ints(b[i]["input_ids"]));
            float[] x = Floats(a[i]["token_logprobs"]), y = Floats(b[i]["token_logprobs"]);
            Assert.Equal(x.Length, y.Length);
            for (int t = 0; t < x.Length; t++) Assert.True(Math.Abs(x[t] - y[t]) < 1e-5);
        }
    }

    [Fact]
    public void Malformed_line_is_one_line_error_naming_file_line_and_field_and_output_is_untouched()
    {
        using var tmp = TestPaths.NewTempDir();
        string input = Path.Combine(tmp.Path, "in.jsonl"), output = Path.Combine(tmp.Path, "out.jsonl");
        File.WriteAllText(output, "old");
        // Nine good lines (a full batch is already written to the temporary file) then a bad one.
        WriteLines(input, [.. Enumerable.Repeat("{\"input_ids\": [1, 2, 3]}", 9), "{\"input_ids\": [1, \"x\"]}"]);
        var r = CliRunner.Run("logprobs", "-m", TestPaths.RequireShared("fixtures/llama-tiny"), "-i", input, "-o", output);
        Assert.Equal(1, r.Code);
        Assert.Single(CliRunner.Lines(r.Err));
        Assert.Equal($"error: {input}:10: field 'input_ids': element 1: expected an integer, got string", r.Err.Trim());
        Assert.Equal("old", File.ReadAllText(output));
        Assert.Equal(2, Directory.GetFileSystemEntries(tmp.Path).Length);   // no temporary file left

        WriteLines(input, "{\"ids\": [1]}");
        r = CliRunner.Run("logprobs", "-m", TestPaths.RequireShared("fixtures/llama-tiny"), "-i", input);
        Assert.Equal(1, r.Code);
        Assert.Contains($"{input}:1: expected 'input_ids'", r.Err);
    }

    [Fact]
    public void Token_id_outside_the_vocabulary_names_the_line()
    {
        using var tmp = TestPaths.NewTempDir();
        string input = Path.Combine(tmp.Path, "in.jsonl");
        WriteLines(input, "{\"input_ids\": [1, 2]}", "{\"input_ids\": [5, 320]}");   // llama-tiny has 320 ids
        var r = CliRunner.Run("logprobs", "-m", TestPaths.RequireShared("fixtures/llama-tiny"), "-i", input);
        Assert.Equal(1, r.Code);
        Assert.Equal($"error: {input}:2: field 'input_ids': token id 320 at position 1 is outside the model's vocabulary [0, 320)", r.Err.Trim());
    }

    [Fact]
    public void Over_length_is_an_error_or_truncated_with_a_warning()
    {
        using var tmp = TestPaths.NewTempDir();
        string input = Path.Combine(tmp.Path, "in.jsonl");
        var longIds = Enumerable.Range(0, 130).Select(i => (i * 7) % 320).ToArray();   // context is 128
        WriteLines(input, "{\"input_ids\": [3, 4, 5]}", $"{{\"input_ids\": [{string.Join(",", longIds)}]}}");
        string model = TestPaths.RequireShared("fixtures/llama-tiny");
        var r = CliRunner.Run("logprobs", "-m", model, "-i", input);
        Assert.Equal(1, r.Code);
        Assert.Contains($"{input}:2: field 'input_ids': 130 tokens exceed the model's context of 128", r.Err);

        r = CliRunner.Run("logprobs", "-m", model, "-i", input, "--over-length", "truncate");
        Assert.Equal(0, r.Code);
        Assert.Equal("warning: 1 sequence(s) longer than the model's context of 128 tokens were truncated (line 2)", r.Err.Trim());
        var lines = ParseJsonl(r.Out);
        Assert.Equal(longIds[..128], Ints(lines[1]["input_ids"]));
        Assert.Equal(127, lines[1]["token_logprobs"]!.AsArray().Count);
    }

    [Fact]
    public void Text_lines_use_the_folders_tokenizer_with_bos_and_need_one()
    {
        using var tmp = TestPaths.NewTempDir();
        string model = SaveByteModel(Path.Combine(tmp.Path, "model"));
        string input = Path.Combine(tmp.Path, "in.jsonl");
        WriteLines(input, "{\"text\": \"hi!\"}", "{\"input_ids\": [256, 104, 105, 33]}");
        var r = CliRunner.Run("logprobs", "-m", model, "-i", input);
        Assert.True(r.Code == 0, r.Err);
        var lines = ParseJsonl(r.Out);
        Assert.Equal([256, 104, 105, 33], Ints(lines[0]["input_ids"]));   // <|bos|> h i !
        Assert.Equal(Floats(lines[1]["token_logprobs"]), Floats(lines[0]["token_logprobs"]));

        r = CliRunner.Run("logprobs", "-m", TestPaths.RequireShared("fixtures/gpt2-tiny"), "-i", input);
        Assert.Equal(1, r.Code);
        Assert.Contains($"{input}:1: field 'text': text needs a tokenizer", r.Err);
    }

    [Fact]
    public void Options_come_from_yaml_and_missing_model_is_a_usage_error()
    {
        using var tmp = TestPaths.NewTempDir();
        string input = Path.Combine(tmp.Path, "in.jsonl"), output = Path.Combine(tmp.Path, "o.jsonl");
        WriteLines(input, "{\"input_ids\": [3, 4, 5]}");
        string yaml = Path.Combine(tmp.Path, "r.yaml");
        File.WriteAllText(yaml, $"model: {TestPaths.RequireShared("fixtures/llama-tiny")}\ninput: {input}\noutput: {output}\nbatch_size: 2\n");
        var r = CliRunner.Run("logprobs", "--config", yaml);
        Assert.True(r.Code == 0, r.Err);
        Assert.Single(ReadJsonl(output));

        r = CliRunner.Run("logprobs", "--input", input);
        Assert.Equal(2, r.Code);
        Assert.StartsWith("error: option --model is required", r.Err);

        r = CliRunner.Run("logprobs", "-m", Path.Combine(tmp.Path, "nope"), "-i", input);
        Assert.Equal(1, r.Code);
        Assert.Equal($"error: --model {Path.Combine(tmp.Path, "nope")}: model folder not found.", r.Err.Trim());
    }
}
