using FineAlign.Tests.Support;
using FineAlign.Tests.Text;
using FineAlign.Text;

namespace FineAlign.Tests.Reliability;

public class EmptyTokenTests
{
    /// <summary>Found by the tokenizer fuzz test: an empty special-token string stalled the splitter forever.</summary>
    [Fact]
    public async Task AnEmptyAddedTokenIsACleanErrorNotAHang()
    {
        using var dir = TestPaths.NewTempDir();
        TinyTokenizerFiles.WriteVocabMerges(dir.Path);
        File.WriteAllText(Path.Combine(dir.Path, "tokenizer_config.json"),
            """{"eos_token": "<|endoftext|>", "added_tokens_decoder": {"260": {"content": "", "special": true}}}""");
        var load = Task.Run(() => TokenizerLoader.Load(dir.Path).Encode("Hello world"));
        var finished = await Task.WhenAny(load, Task.Delay(TimeSpan.FromSeconds(20)));
        Assert.Same(load, finished);
        var e = await Assert.ThrowsAsync<FineAlignException>(() => load);
        Assert.Contains("tokenizer_config.json", e.Message);
        Assert.Contains("empty", e.Message);
    }
}
