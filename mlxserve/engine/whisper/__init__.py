"""Speech to text: Whisper in CTranslate2 format run by faster-whisper on the CPU."""
