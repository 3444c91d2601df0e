using System.Text.Json.Nodes;
using FineAlign.Cli.Commands;
using FineAlign.Generation;
using FineAlign.Models;
using FineAlign.Tests.Support;
using FineAlign.Text;
using static FineAlign.Tests.Cli.CommandFixtures;

namespace FineAlign.Tests.Cli;

public class GenerateCommandTests
{
    [Fact]
    public void Same_seed_gives_identical_output_file_and_another_seed_differs()
    {
        using var tmp = TestPaths.NewTempDir();
        string model = SaveByteModel(Path.Combine(tmp.Path, "model"));
        string input = Path.Combine(tmp.Path, "prompts.jsonl");
        WriteLines(input, "{\"prompt\": \"The film\"}", "{\"prompt\": \"A\"}", "{\"prompt\": \"Once upon\"}");
        string[] Args(string outFile, string seed) =>
            ["generate", "-m", model, "-i", input, "-o", outFile, "--seed", seed, "--max-new-tokens", "12", "--batch-size", "2", "--temperature", "1.5"];
        string a = Path.Combine(tmp.Path, "a.jsonl"), b = Path.Combine(tmp.Path, "b.jsonl"), c = Path.Combine(tmp.Path, "c.jsonl");
        var r = CliRunner.Run(Args(a, "5"));
        Assert.True(r.Code == 0, r.Err);
        Assert.Contains("wrote 3 completions", r.Out);
        Assert.Equal(0, CliRunner.Run(Args(b, "5")).Code);
        Assert.Equal(0, CliRunner.Run(Args(c, "6")).Code);
        Assert.Equal(File.ReadAllBytes(a), File.ReadAllBytes(b));
        Assert.NotEqual(File.ReadAllBytes(a), File.ReadAllBytes(c));

        var lines = ReadJsonl(a);
        Assert.Equal([0, 1, 2], lines.Select(l => l["index"]!.GetValue<int>()));
        Assert.Equal([1, 2, 3], lines.Select(l => l["line"]!.GetValue<int>()));
        Assert.Equal("The film", lines[0]["prompt"]!.GetValue<string>());
        Assert.Equal([256, .. "The film"u8.ToArray().Select(x => (int)x)], Ints(lines[0]["prompt_input_ids"]));
        foreach (var l in lines)
        {
            int n = Ints(l["completion_ids"]).Length;
            Assert.Equal(n, Floats(l["token_logprobs"]).Length);
            Assert.Equal(n == 12 ? "length" : "eos", l["finish_reason"]!.GetValue<string>());
            Assert.All(Floats(l["token_logprobs"]), x => Assert.True(x <= 0));
        }
    }

    [Fact]
    public void Greedy_output_equals_the_library_generators_greedy()
    {
        using var tmp = TestPaths.NewTempDir();
        string model = SaveByteModel(Path.Combine(tmp.Path, "model"), seed: 3);
        string output = Path.Combine(tmp.Path, "out.jsonl");
        var r = CliRunner.Run("generate", "-m", model, "-p", "Hello", "-p", "x", "--greedy", "--max-new-tokens", "10", "-o", output, "--seed", "99");
        Assert.True(r.Code == 0, r.Err);
        var lines = ReadJsonl(output);

        using var lm = ModelIO.Load(model);
        var tok = TokenizerLoader.Load(model);
        var want = TextGenerator.Generate(lm, tok, ["Hello", "x"], new GenerationOptions { MaxNewTokens = 10, DoSample = false });
        for (int i = 0; i < 2; i++)
        {
            Assert.Equal(want[i].PromptIds, Ints(lines[i]["prompt_input_ids"]));
            Assert.Equal(want[i].Tokens, Ints(lines[i]["completion_ids"]));
            Assert.Equal(want[i].Text, lines[i]["completion"]!.GetValue<string>());
            float[] lp = Floats(lines[i]["token_logprobs"]);
            for (int t = 0; t < lp.Length; t++) Assert.Equal(want[i].LogProbs[t], lp[t], 1e-5f);
            Assert.Equal(GenerateCommand.FinishName(want[i].FinishReason), lines[i]["finish_reason"]!.GetValue<string>());
        }
    }

    [Fact]
    public void Stop_string_cuts_the_completion_before_it()
    {
        using var tmp = TestPaths.NewTempDir();
        string model = SaveByteModel(Path.Combine(tmp.Path, "model"), seed: 4);
        string free = Path.Combine(tmp.Path, "free.jsonl"), stopped = Path.Combine(tmp.Path, "stop.jsonl");
        string[] common = ["generate", "-m", model, "-p", "Hi", "--max-new-tokens", "40", "--seed", "1", "--temperature", "2"];
        Assert.Equal(0, CliRunner.Run([.. common, "-o", free]).Code);
        var line = ReadJsonl(free)[0];
        string text = line["completion"]!.GetValue<string>();
        // The first ASCII character not seen earlier in the completion (not at its start) becomes the stop string.
        int j = Enumerable.Range(1, Math.Max(0, text.Length - 1)).First(k => text[k] is >= ' ' and < '\x7f' && !text[..k].Contains(text[k]));
        string stop = text[j].ToString();

        var r = CliRunner.Run([.. common, "-o", stopped, "--stop", stop, "--stop", "never-seen"]);
        Assert.True(r.Code == 0, r.Err);
        var s = ReadJsonl(stopped)[0];
        Assert.Equal(text[..j], s["completion"]!.GetValue<string>());
        Assert.Equal("stop_string", s["finish_reason"]!.GetValue<string>());
        int[] all = Ints(line["completion_ids"]), cut = Ints(s["completion_ids"]);
        Assert.True(cut.Length < all.Length);
        Assert.Equal(all[..cut.Length], cut);   // same sampled stream up to the stop
    }

    [Fact]
    public void Chat_and_token_id_prompts_and_readable_console_output()
    {
        using var tmp = TestPaths.NewTempDir();
        string model = SaveByteModel(Path.Combine(tmp.Path, "model"), seed: 5);
        string input = Path.Combine(tmp.Path, "p.jsonl"), output = Path.Combine(tmp.Path, "o.jsonl");
        WriteLines(input,
            "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", \"content\": \"Rate it\"}]}",
            "{\"prompt_input_ids\": [256, 72, 105]}",
            "{\"prompt\": [{\"role\": \"user\", \"content\": \"Hey\"}]}");
        var r = CliRunner.Run("generate", "-m", model, "-i", input, "-o", output, "--greedy", "--max-new-tokens", "6", "--batch-size", "2");
        Assert.True(r.Code == 0, r.Err);
        var lines = ReadJsonl(output);
        var tok = new ByteTokenizer();
        var msgs = new[] { new ChatMessage("system", "Be brief."), new ChatMessage("user", "Rate it") };
        Assert.Equal(ChatTemplates.EncodePrompt(tok, ChatFormat.ChatML, msgs), Ints(lines[0]["prompt_input_ids"]));
        Assert.Equal("<|bos|><|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nRate it<|im_end|>\n<|im_start|>assistant\n",
            tok.Decode(Ints(lines[0]["prompt_input_ids"]), skipSpecialTokens: false));
        Assert.Equal("Rate it", lines[0]["prompt"]![1]!["content"]!.GetValue<string>());
        Assert.Equal([256, 72, 105], Ints(lines[1]["prompt_input_ids"]));
        Assert.Equal("<|bos|>Hi", lines[1]["prompt"]!.GetValue<string>());
        Assert.Equal(ChatTemplates.EncodePrompt(tok, ChatFormat.ChatML, [new ChatMessage("user", "Hey")]), Ints(lines[2]["prompt_input_ids"]));

        var console = CliRunner.Run("generate", "-m", model, "-p", "Hello there", "--greedy", "--max-new-tokens", "6");
        Assert.True(console.Code == 0, console.Err);
        using var lm = ModelIO.Load(model);
        string completion = TextGenerator.Generate(lm, tok, ["Hello there"], new GenerationOptions { MaxNewTokens = 6, DoSample = false })[0].Text;
        Assert.Contains("### prompt 1\nHello there\n### completion (", console.Out);
        Assert.Contains(")\n" + completion + "\n", console.Out);
        Assert.DoesNotContain("{", console.Out);
    }

    [Fact]
    public void Missing_model_folder_is_one_line_error_exit_1()
    {
        using var tmp = TestPaths.NewTempDir();
        string missing = Path.Combine(tmp.Path, "no-model");
        var r = CliRunner.Run("generate", "-m", missing, "-p", "hi");
        Assert.Equal(1, r.Code);
        Assert.Equal("", r.Out);
        Assert.Equal($"error: --model {missing}: model folder not found.", r.Err.Trim());
        Assert.Single(CliRunner.Lines(r.Err));
    }

    [Fact]
    public void Bad_prompt_lines_and_usage_errors()
    {
        using var tmp = TestPaths.NewTempDir();
        string model = SaveByteModel(Path.Combine(tmp.Path, "model"), context: 32);
        string input = Path.Combine(tmp.Path, "p.jsonl"), output = Path.Combine(tmp.Path, "o.jsonl");

        WriteLines(input, "{\"prompt\": \"ok\"}", "{\"messages\": [{\"role\": \"robot\", \"content\": \"x\"}]}");
        var r = CliRunner.Run("generate", "-m", model, "-i", input, "-o", output, "--max-new-tokens", "4");
        Assert.Equal(1, r.Code);
        Assert.Equal($"error: {input}:2: field 'messages': message 0 has role 'robot'; expected system, user or assistant", r.Err.Trim());
        Assert.False(File.Exists(output));

        WriteLines(input, "{\"prompt_input_ids\": [1, 261]}");
        r = CliRunner.Run("generate", "-m", model, "-i", input, "--max-new-tokens", "4");
        Assert.Contains($"{input}:1: field 'prompt_input_ids': token id 261 at position 1 is outside", r.Err);

        r = CliRunner.Run("generate", "-m", model, "-p", new string('a', 20), "--max-new-tokens", "20");
        Assert.Equal(1, r.Code);
        Assert.Contains("--prompt #1: prompt of 21 tokens + --max-new-tokens 20 exceeds the model's context of 32 tokens", r.Err);

        Assert.Equal(2, CliRunner.Run("generate", "-m", model).Code);
        Assert.Equal(2, CliRunner.Run("generate", "-m", model, "-p", "a", "-i", input).Code);
        Assert.Equal(2, CliRunner.Run("generate", "-m", model, "-p", "a", "--top-p", "0").Code);
        r = CliRunner.Run("generate", "-m", model, "-p", "a", "--chat-template", "chatmlx");
        Assert.Equal(1, r.Code);
        Assert.Contains("unknown chat template 'chatmlx'", r.Err);
    }
}
