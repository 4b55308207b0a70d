"""One short paragraph of ordinary prose per language IFEval asks for (and Chinese), written for this package.

Why: the word-order test asks the model under test how much more likely a window of the answer is than
its words shuffled. A model gains much in the languages it knows and little in those it does not, so a
correct Hindi answer and Hindi word salad look alike to an English model. `Fluency.order_marks` scores
these paragraphs once per model: a language's mark is half the gain the model gets on its paragraph, and
a language where the model gains less than `measures.MIN_KNOWN_GAIN` is not judged for word order.
The paragraphs say the same thing in each language (a baker opening his shop), so the marks compare.
"""

from __future__ import annotations

REFERENCES: dict[str, str] = {
    "en": "Every morning the old baker opens his small shop before sunrise. He mixes flour, water and salt, and "
          "soon the smell of fresh bread fills the quiet street. Neighbours stop by on their way to work and talk "
          "with him about the weather and their children.",
    "es": "Cada mañana el viejo panadero abre su pequeña tienda antes del amanecer. Mezcla harina, agua y sal, y "
          "pronto el olor del pan recién hecho llena la calle tranquila. Los vecinos pasan de camino al trabajo y "
          "hablan con él del tiempo y de sus hijos.",
    "pt": "Todas as manhãs o velho padeiro abre a sua pequena loja antes do nascer do sol. Ele mistura farinha, "
          "água e sal, e logo o cheiro do pão fresco enche a rua tranquila. Os vizinhos passam a caminho do "
          "trabalho e conversam com ele sobre o tempo e os filhos.",
    "fr": "Chaque matin, le vieux boulanger ouvre sa petite boutique avant le lever du soleil. Il mélange la "
          "farine, l'eau et le sel, et bientôt l'odeur du pain frais remplit la rue calme. Les voisins passent en "
          "allant au travail et parlent avec lui du temps et de leurs enfants.",
    "de": "Jeden Morgen öffnet der alte Bäcker seinen kleinen Laden vor Sonnenaufgang. Er mischt Mehl, Wasser und "
          "Salz, und bald erfüllt der Duft von frischem Brot die ruhige Straße. Die Nachbarn kommen auf dem Weg "
          "zur Arbeit vorbei und sprechen mit ihm über das Wetter und ihre Kinder.",
    "it": "Ogni mattina il vecchio fornaio apre il suo piccolo negozio prima dell'alba. Mescola farina, acqua e "
          "sale, e presto il profumo del pane fresco riempie la strada tranquilla. I vicini passano andando al "
          "lavoro e parlano con lui del tempo e dei loro figli.",
    "fi": "Joka aamu vanha leipuri avaa pienen kauppansa ennen auringonnousua. Hän sekoittaa jauhoja, vettä ja "
          "suolaa, ja pian tuoreen leivän tuoksu täyttää hiljaisen kadun. Naapurit poikkeavat matkalla töihin ja "
          "puhuvat hänen kanssaan säästä ja lapsistaan.",
    "pl": "Każdego ranka stary piekarz otwiera swój mały sklep przed wschodem słońca. Miesza mąkę, wodę i sól, a "
          "wkrótce zapach świeżego chleba wypełnia cichą ulicę. Sąsiedzi zaglądają po drodze do pracy i rozmawiają "
          "z nim o pogodzie i swoich dzieciach.",
    "ru": "Каждое утро старый пекарь открывает свою маленькую лавку до восхода солнца. Он смешивает муку, воду и "
          "соль, и вскоре запах свежего хлеба наполняет тихую улицу. Соседи заходят по дороге на работу и говорят "
          "с ним о погоде и своих детях.",
    "uk": "Щоранку старий пекар відчиняє свою маленьку крамницю до сходу сонця. Він змішує борошно, воду і сіль, "
          "і незабаром запах свіжого хліба наповнює тиху вулицю. Сусіди заходять дорогою на роботу і розмовляють "
          "з ним про погоду та своїх дітей.",
    "bg": "Всяка сутрин старият пекар отваря малкия си магазин преди изгрев слънце. Той смесва брашно, вода и сол, "
          "и скоро миризмата на пресен хляб изпълва тихата улица. Съседите минават на път за работа и говорят с "
          "него за времето и за децата си.",
    "sw": "Kila asubuhi mwokaji mzee hufungua duka lake dogo kabla ya jua kuchomoza. Anachanganya unga, maji na "
          "chumvi, na punde harufu ya mkate mpya hujaa barabara tulivu. Majirani hupita wakienda kazini na "
          "kuzungumza naye kuhusu hali ya hewa na watoto wao.",
    "vi": "Mỗi buổi sáng, người thợ làm bánh già mở cửa tiệm nhỏ của mình trước khi mặt trời mọc. Ông trộn bột, "
          "nước và muối, và chẳng bao lâu mùi bánh mì mới nướng tràn ngập con phố yên tĩnh. Hàng xóm ghé qua trên "
          "đường đi làm và trò chuyện với ông về thời tiết và con cái.",
    "ar": "كل صباح يفتح الخباز العجوز متجره الصغير قبل شروق الشمس. يخلط الدقيق والماء والملح، وسرعان ما تملأ "
          "رائحة الخبز الطازج الشارع الهادئ. يمر الجيران في طريقهم إلى العمل ويتحدثون معه عن الطقس وعن أطفالهم.",
    "fa": "هر روز صبح نانوای پیر مغازه کوچکش را پیش از طلوع آفتاب باز می‌کند. او آرد و آب و نمک را مخلوط می‌کند و "
          "به زودی بوی نان تازه خیابان آرام را پر می‌کند. همسایه‌ها در راه رفتن به سر کار سری می‌زنند و با او درباره "
          "هوا و بچه‌هایشان حرف می‌زنند.",
    "ur": "ہر صبح بوڑھا نانبائی سورج نکلنے سے پہلے اپنی چھوٹی سی دکان کھولتا ہے۔ وہ آٹا، پانی اور نمک ملاتا ہے، اور "
          "جلد ہی تازہ روٹی کی خوشبو خاموش گلی میں پھیل جاتی ہے۔ پڑوسی کام پر جاتے ہوئے رکتے ہیں اور اس سے موسم اور "
          "اپنے بچوں کے بارے میں باتیں کرتے ہیں۔",
    "he": "בכל בוקר האופה הזקן פותח את החנות הקטנה שלו לפני הזריחה. הוא מערבב קמח, מים ומלח, ועד מהרה ריח הלחם "
          "הטרי ממלא את הרחוב השקט. השכנים עוברים בדרכם לעבודה ומדברים איתו על מזג האוויר ועל הילדים שלהם.",
    "hi": "हर सुबह बूढ़ा नानबाई सूरज उगने से पहले अपनी छोटी सी दुकान खोलता है। वह आटा, पानी और नमक मिलाता है, और जल्द "
          "ही ताज़ी रोटी की खुशबू शांत गली में फैल जाती है। पड़ोसी काम पर जाते हुए रुकते हैं और उससे मौसम और अपने "
          "बच्चों के बारे में बातें करते हैं।",
    "mr": "दररोज सकाळी म्हातारा बेकर सूर्योदयापूर्वी आपले छोटेसे दुकान उघडतो. तो पीठ, पाणी आणि मीठ मिसळतो, आणि लवकरच "
          "ताज्या भाकरीचा सुगंध शांत रस्त्यावर पसरतो. शेजारी कामावर जाताना थांबतात आणि त्याच्याशी हवामान आणि आपल्या "
          "मुलांविषयी बोलतात.",
    "ne": "हरेक बिहान बूढो बेकरले सूर्योदय अघि आफ्नो सानो पसल खोल्छ। ऊ पीठो, पानी र नुन मिसाउँछ, र चाँडै ताजा रोटीको "
          "गन्धले शान्त गल्ली भरिन्छ। छिमेकीहरू कामतिर जाँदा बाटोमा रोकिन्छन् र उसँग मौसम र आफ्ना छोराछोरीको बारेमा "
          "कुरा गर्छन्।",
    "bn": "প্রতিদিন সকালে বুড়ো রুটিওয়ালা সূর্য ওঠার আগে তার ছোট্ট দোকান খোলে। সে ময়দা, জল আর লবণ মেশায়, আর শীঘ্রই "
          "তাজা রুটির গন্ধে শান্ত রাস্তা ভরে যায়। প্রতিবেশীরা কাজে যাওয়ার পথে থামে এবং তার সঙ্গে আবহাওয়া আর তাদের "
          "ছেলেমেয়েদের নিয়ে কথা বলে।",
    "gu": "દરરોજ સવારે વૃદ્ધ બેકર સૂર્યોદય પહેલાં પોતાની નાની દુકાન ખોલે છે. તે લોટ, પાણી અને મીઠું ભેળવે છે, અને "
          "ટૂંક સમયમાં તાજી રોટલીની સુગંધ શાંત શેરીમાં ફેલાઈ જાય છે. પડોશીઓ કામ પર જતાં રોકાય છે અને તેની સાથે હવામાન "
          "અને પોતાનાં બાળકો વિશે વાત કરે છે.",
    "pa": "ਹਰ ਸਵੇਰ ਬੁੱਢਾ ਨਾਨਬਾਈ ਸੂਰਜ ਚੜ੍ਹਨ ਤੋਂ ਪਹਿਲਾਂ ਆਪਣੀ ਛੋਟੀ ਜਿਹੀ ਦੁਕਾਨ ਖੋਲ੍ਹਦਾ ਹੈ। ਉਹ ਆਟਾ, ਪਾਣੀ ਅਤੇ ਲੂਣ ਮਿਲਾਉਂਦਾ ਹੈ, "
          "ਅਤੇ ਜਲਦੀ ਹੀ ਤਾਜ਼ੀ ਰੋਟੀ ਦੀ ਖੁਸ਼ਬੂ ਸ਼ਾਂਤ ਗਲੀ ਵਿੱਚ ਫੈਲ ਜਾਂਦੀ ਹੈ। ਗੁਆਂਢੀ ਕੰਮ ਤੇ ਜਾਂਦੇ ਹੋਏ ਰੁਕਦੇ ਹਨ ਅਤੇ ਉਸ ਨਾਲ ਮੌਸਮ ਅਤੇ ਆਪਣੇ "
          "ਬੱਚਿਆਂ ਬਾਰੇ ਗੱਲਾਂ ਕਰਦੇ ਹਨ।",
    "ta": "ஒவ்வொரு காலையும் வயதான ரொட்டிக்காரர் சூரியன் உதிக்கும் முன் தனது சிறிய கடையைத் திறக்கிறார். அவர் மாவு, "
          "தண்ணீர் மற்றும் உப்பைக் கலக்கிறார், விரைவில் புதிய ரொட்டியின் மணம் அமைதியான தெருவை நிரப்புகிறது. அண்டை "
          "வீட்டார் வேலைக்குச் செல்லும் வழியில் நின்று அவருடன் வானிலை மற்றும் தங்கள் குழந்தைகள் பற்றிப் பேசுகிறார்கள்.",
    "te": "ప్రతి ఉదయం ముసలి రొట్టెల వ్యాపారి సూర్యోదయానికి ముందే తన చిన్న దుకాణాన్ని తెరుస్తాడు. అతను పిండి, నీరు "
          "మరియు ఉప్పు కలుపుతాడు, త్వరలోనే తాజా రొట్టె వాసన నిశ్శబ్దమైన వీధిని నింపుతుంది. పొరుగువారు పనికి వెళ్తూ "
          "ఆగి అతనితో వాతావరణం గురించి, తమ పిల్లల గురించి మాట్లాడతారు.",
    "kn": "ಪ್ರತಿ ಬೆಳಿಗ್ಗೆ ಮುದುಕ ಬೇಕರಿಯವನು ಸೂರ್ಯೋದಯಕ್ಕೆ ಮೊದಲು ತನ್ನ ಸಣ್ಣ ಅಂಗಡಿಯನ್ನು ತೆರೆಯುತ್ತಾನೆ. ಅವನು ಹಿಟ್ಟು, ನೀರು "
          "ಮತ್ತು ಉಪ್ಪು ಬೆರೆಸುತ್ತಾನೆ, ಸ್ವಲ್ಪ ಹೊತ್ತಿನಲ್ಲೇ ತಾಜಾ ರೊಟ್ಟಿಯ ವಾಸನೆ ಶಾಂತವಾದ ಬೀದಿಯನ್ನು ತುಂಬುತ್ತದೆ. ನೆರೆಹೊರೆಯವರು "
          "ಕೆಲಸಕ್ಕೆ ಹೋಗುವ ದಾರಿಯಲ್ಲಿ ನಿಂತು ಅವನೊಂದಿಗೆ ಹವಾಮಾನ ಮತ್ತು ತಮ್ಮ ಮಕ್ಕಳ ಬಗ್ಗೆ ಮಾತನಾಡುತ್ತಾರೆ.",
    "ml": "എല്ലാ ദിവസവും രാവിലെ വൃദ്ധനായ റൊട്ടിക്കാരൻ സൂര്യോദയത്തിന് മുമ്പ് തന്റെ ചെറിയ കട തുറക്കുന്നു. അവൻ മാവും "
          "വെള്ളവും ഉപ്പും ചേർത്ത് കുഴയ്ക്കുന്നു, താമസിയാതെ പുതിയ റൊട്ടിയുടെ മണം ശാന്തമായ തെരുവിൽ നിറയുന്നു. അയൽക്കാർ "
          "ജോലിക്ക് പോകുന്ന വഴിയിൽ നിന്ന് അവനോട് കാലാവസ്ഥയെക്കുറിച്ചും മക്കളെക്കുറിച്ചും സംസാരിക്കുന്നു.",
    "th": "ทุกเช้าคนทำขนมปังชราจะเปิดร้านเล็กๆ ของเขาก่อนพระอาทิตย์ขึ้น เขาผสมแป้ง น้ำ และเกลือ "
          "ไม่นานกลิ่นขนมปังสดก็อบอวลไปทั่วถนนที่เงียบสงบ เพื่อนบ้านแวะมาระหว่างทางไปทำงาน "
          "และคุยกับเขาเรื่องอากาศและลูกๆ ของพวกเขา",
    "ja": "毎朝、年老いたパン屋は日の出前に小さな店を開ける。小麦粉と水と塩を混ぜると、"
          "やがて焼きたてのパンの香りが静かな通りに広がる。近所の人たちは仕事に行く途中に"
          "立ち寄り、天気や子どもたちのことを彼と話す。",
    "ko": "매일 아침 늙은 제빵사는 해가 뜨기 전에 작은 가게 문을 연다. 그는 밀가루와 물과 "
          "소금을 섞고, 곧 갓 구운 빵 냄새가 조용한 거리를 가득 채운다. 이웃들은 출근길에 "
          "들러 그와 날씨와 아이들에 대해 이야기를 나눈다.",
    "zh": "每天早上，年老的面包师在日出之前打开他的小店。他把面粉、水和盐混在一起，"
          "很快新鲜面包的香味就飘满了安静的街道。邻居们在上班的路上停下来，和他聊天气，"
          "也聊他们的孩子。",
}
