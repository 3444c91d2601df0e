using FineAlign.Data;
using FineAlign.Tests.Support;

namespace FineAlign.Tests.Reliability;

/// <summary>
/// JSON has no NaN/Infinity literals, but they arrive anyway: as bare tokens (invalid JSON), as strings ("NaN"), or as
/// numbers too large for a double (1e999). Numeric fields (rewards, labels, scores) must reject all of them by line and field.
/// </summary>
public class NonFiniteNumberTests
{
    [Theory]
    [InlineData("{\"reward\": NaN}", "invalid JSON")]
    [InlineData("{\"reward\": Infinity}", "invalid JSON")]
    [InlineData("{\"reward\": -Infinity}", "invalid JSON")]
    [InlineData("{\"reward\": \"NaN\"}", "field 'reward': expected a number, got string")]
    [InlineData("{\"reward\": 1e999}", "field 'reward': expected a finite number, got 1e999")]
    [InlineData("{\"reward\": -1e999}", "field 'reward': expected a finite number, got -1e999")]
    [InlineData("{\"reward\": null}", "field 'reward': expected a number, got null")]
    [InlineData("{\"label\": true}", "field 'reward': missing")]
    public void Numeric_fields_reject_non_finite_values(string line, string expected)
    {
        using var tmp = TestPaths.NewTempDir();
        string path = Path.Combine(tmp.Path, "rewards.jsonl");
        File.WriteAllText(path, "{\"reward\": 0.5}\n" + line + "\n");
        var e = Assert.Throws<DataFormatException>(() => JsonlReader.Read(path).Select(l => l.RequireNumber(path, "reward")).ToList());
        Assert.Equal(2, e.Line);
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void Finite_numbers_including_extremes_are_read_exactly()
    {
        using var tmp = TestPaths.NewTempDir();
        string path = Path.Combine(tmp.Path, "rewards.jsonl");
        File.WriteAllText(path, "{\"reward\": -0.25}\n{\"reward\": 1.7976931348623157e308}\n{\"reward\": 5e-324}\n{\"reward\": 3}\n");
        var values = JsonlReader.Read(path).Select(l => l.RequireNumber(path, "reward")).ToArray();
        Assert.Equal([-0.25, double.MaxValue, double.Epsilon, 3.0], values);
    }
}

/// <summary>Duplicate keys in the JSON files a model folder carries are one-line errors, not ArgumentExceptions.</summary>
public class DuplicateKeyTests
{
    [Fact]
    public void Duplicate_keys_in_tokenizer_config_and_config_json_are_clean_errors()
    {
        using var tmp = TestPaths.NewTempDir();
        new FineAlign.Text.ByteTokenizer().Save(tmp.Path);
        string tc = Path.Combine(tmp.Path, "tokenizer_config.json");
        File.WriteAllText(tc, "{\"add_bos_token\": false, " + File.ReadAllText(tc).TrimStart()[1..]);   // the file has its own add_bos_token
        var e = Assert.ThrowsAny<FineAlignException>(() => FineAlign.Text.TokenizerLoader.Load(tmp.Path));
        Assert.Contains("tokenizer_config.json", e.Message);
        Assert.True(e.Message.Contains("Duplicate"), e.Message);

        string config = Path.Combine(tmp.Path, "config.json");
        File.WriteAllText(config, "{\"model_type\": \"llama\", \"vocab_size\": 320, \"vocab_size\": 99}");
        e = Assert.ThrowsAny<FineAlignException>(() => FineAlign.Models.ModelConfig.Load(config));
        Assert.Contains("Duplicate property 'vocab_size'", e.Message);
    }
}
